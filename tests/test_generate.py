"""The decode loop and sampling: cache == no cache, batched == alone, sliding past the context, definitions."""

import dataclasses
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import run_cli

from experiments.gpt2.model import GPT2
from experiments.gpt2ish.model import GPT2ish
from lmplay.data.tokenizers import get_tokenizer
from lmplay.errors import ConfigError, OutputError
from lmplay.generation.config import GenerationConfig
from lmplay.generation.decode import generate_tokens, padded_causal_mask
from lmplay.generation.sampling import (
    apply_repetition_penalty,
    pick_next,
    top_k_filter,
    top_p_filter,
)
from lmplay.generation.text import TextStream, encode_prompts, generate_text
from lmplay.modules import MultiHeadAttention
from lmplay.runner import registered

EOT = 256  # the bytes tokenizer's eot
GREEDY = GenerationConfig(max_new_tokens=110, stop_at_eot=False)




def widened(model: torch.nn.Module) -> torch.nn.Module:
    """Larger random weights spread the logits, so greedy decoding never meets near-ties."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model.eval()


def tiny(cls=GPT2ish, context_len: int = 128, seed: int = 0) -> torch.nn.Module:
    """A 2-block byte-level model."""
    torch.manual_seed(seed)
    return widened(cls(vocab_size=257, context_len=context_len, num_blocks=2, embed_dim=32, num_heads=4,
                       tokenizer="bytes"))


def prompts_of(*lengths: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(sum(lengths))
    return [[EOT, *torch.randint(0, 256, (n - 1,), generator=gen).tolist()] for n in lengths]


@pytest.mark.parametrize("cls", [GPT2ish, GPT2])
@pytest.mark.parametrize("length", [1, 7, 16])
def test_greedy_with_cache_equals_without(cls, length):
    model = tiny(cls)
    prompt = prompts_of(length)
    cached = generate_tokens(model, prompt, GREEDY, eot_id=EOT)
    uncached = generate_tokens(model, prompt, GenerationConfig(max_new_tokens=110, stop_at_eot=False,
                                                               use_cache=False), eot_id=EOT)
    assert len(cached[0]) == 110
    assert cached == uncached


TINY_VERSIONS = sorted(name for name in registered() if name == "test_runner" or name.endswith("_test"))


def test_a_model_with_no_layer_to_cache_decodes_without_one():
    """An attention of one's own that is no MultiHeadAttention leaves new_cache empty: cached decoding (the default)
    was an IndexError in the decoder."""
    class OwnAttention(GPT2ish):
        def new_cache(self, batch_size: int, max_len: int | None = None) -> list:
            return []

    prompts = prompts_of(3, 9)
    assert generate_tokens(tiny(OwnAttention), prompts, GREEDY, eot_id=EOT) == generate_tokens(
        tiny(GPT2ish), prompts, GREEDY, eot_id=EOT)


@pytest.mark.parametrize("exp", TINY_VERSIONS)
def test_every_experiment_decodes_the_same_cached_uncached_batched_and_alone(exp):
    """A new experiment's attention and positions must keep the cache contract: checked here for each."""
    torch.manual_seed(0)
    model = widened(registered()[exp].factory().build_model(vocab_size=257, tokenizer="bytes", context_len=48))
    prompts = prompts_of(4, 21)
    config = GenerationConfig(max_new_tokens=60, stop_at_eot=False)
    cached = generate_tokens(model, prompts, config, eot_id=EOT)
    uncached = generate_tokens(model, prompts, GenerationConfig(max_new_tokens=60, stop_at_eot=False,
                                                                use_cache=False), eot_id=EOT)
    alone = [generate_tokens(model, [p], config, eot_id=EOT)[0] for p in prompts]
    assert cached == uncached == alone


@pytest.mark.parametrize("exp", TINY_VERSIONS)
def test_every_experiment_computes_only_the_last_columns_logits_when_generating(exp):
    """A prefill over every position would hold B x W x vocab logits only to read the last column."""
    torch.manual_seed(0)
    model = widened(registered()[exp].factory().build_model(vocab_size=257, tokenizer="bytes", context_len=48))
    x = torch.tensor(prompts_of(21))
    torch.testing.assert_close(model(x, last_only=True), model(x)[:, -1:])
    widths = []
    model.register_forward_hook(lambda _m, _a, out: widths.append((out[0] if isinstance(out, tuple) else out).shape[1]))
    for use_cache in (True, False):
        generate_tokens(model, prompts_of(4, 21), GenerationConfig(max_new_tokens=5, stop_at_eot=False,
                                                                   use_cache=use_cache), eot_id=EOT)
    assert widths == [1] * 10


class OldStyleForward(GPT2ish):
    """An experiment copied before `last_only` existed: its forward takes only (x, cache)."""

    def forward(self, x, cache=None):
        return super().forward(x, cache)


def test_a_forward_without_positions_refuses_prompts_of_different_lengths_in_one_line():
    old = OldStyleForward(vocab_size=257, context_len=64, num_blocks=2, embed_dim=32, num_heads=4, tokenizer="bytes")
    with pytest.raises(ConfigError, match=r"OldStyleForward.forward takes no positions and attn_mask, which prompts "
                                          r"of different lengths need in one batch: run them one at a time"):
        old.generate_prompts(["a", "longer one"], max_new_tokens=3)
    assert len(old.generate_prompts(["same", "size"], max_new_tokens=3)) == 2


def test_a_forward_without_last_only_still_generates_the_same_tokens():
    torch.manual_seed(0)
    old = widened(OldStyleForward(vocab_size=257, context_len=128, num_blocks=2, embed_dim=32, num_heads=4,
                                  tokenizer="bytes"))
    new = tiny()
    new.load_state_dict(old.state_dict())
    for use_cache in (True, False):
        config = GenerationConfig(max_new_tokens=40, stop_at_eot=False, use_cache=use_cache)
        assert generate_tokens(old, prompts_of(9), config, eot_id=EOT) == generate_tokens(new, prompts_of(9), config,
                                                                                          eot_id=EOT)


@pytest.mark.parametrize("cls", [GPT2ish, GPT2])
def test_cached_steps_give_the_full_forward_logits(cls):
    """Positions and cache are right: decoding token by token reproduces one forward over the sequence."""
    model = tiny(cls)
    seq = torch.tensor(prompts_of(40))
    with torch.no_grad():
        full = model(seq)
        cache = model.new_cache(1)
        steps = [model(seq[:, :10], cache=cache)[0]]
        steps += [model(seq[:, t:t + 1], cache=cache)[0] for t in range(10, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_padded_rows_get_their_unpadded_logits():
    model = tiny()
    short, long = prompts_of(5, 12)
    ids = torch.tensor([[EOT] * 7 + short, long])
    real = torch.tensor([[False] * 7 + [True] * 5, [True] * 12])
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = model(ids, positions=positions, attn_mask=padded_causal_mask(real))
        alone = model(torch.tensor([short]))
    torch.testing.assert_close(batched[0, 7:], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("lengths", [(3, 17, 9, 30), (2, 48)])  # (2, 48): a full row beside a nearly empty one
def test_batched_prompts_equal_one_by_one(use_cache, lengths):
    model = tiny(context_len=48)
    prompts = prompts_of(*lengths)
    config = GenerationConfig(max_new_tokens=60, use_cache=use_cache, stop_at_eot=False)  # slides past 48
    batched = generate_tokens(model, prompts, config, eot_id=EOT)
    alone = [generate_tokens(model, [p], config, eot_id=EOT)[0] for p in prompts]
    assert batched == alone


def test_a_row_that_slides_rebuilds_its_own_cache_not_the_batchs():
    """Each row slides at its own moment, and each slide prefilled the whole batch: 16 prompts of different lengths
    took 1.4x as long in one batch as one at a time. A slid row's window is prefilled alone now."""
    model = tiny(context_len=48)
    shapes = []
    model.register_forward_pre_hook(lambda _module, args: shapes.append(tuple(args[0].shape)))
    prompts = prompts_of(3, 17, 9, 30)
    config = GenerationConfig(max_new_tokens=60, stop_at_eot=False)
    batched = generate_tokens(model, prompts, config, eot_id=EOT)
    prefills = [s for s in shapes if s[1] > 1]
    assert batched == [generate_tokens(model, [p], config, eot_id=EOT)[0] for p in prompts]
    assert prefills[0] == (4, 30) and len(prefills) > 4 and all(rows == 1 for rows, _ in prefills[1:]), prefills


def test_sliding_past_the_context_is_the_same_with_and_without_cache():
    model = tiny(context_len=32)
    prompt = prompts_of(20)
    cached = generate_tokens(model, prompt, GenerationConfig(max_new_tokens=150, stop_at_eot=False), eot_id=EOT)
    uncached = generate_tokens(model, prompt, GenerationConfig(max_new_tokens=150, stop_at_eot=False,
                                                               use_cache=False), eot_id=EOT)
    assert len(cached[0]) == 150
    assert cached == uncached


def rotated(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of q or k ([B, H, T, D]) at `positions` ([T] or [B, T])."""
    half = x.shape[-1] // 2
    angles = positions[..., None].float() / 100 ** (torch.arange(half, device=x.device) / half)
    cos, sin = (f(angles[:, None] if angles.dim() == 3 else angles) for f in (torch.cos, torch.sin))
    return torch.cat([x[..., :half] * cos - x[..., half:] * sin, x[..., :half] * sin + x[..., half:] * cos], -1)


class RotaryAttention(MultiHeadAttention):
    def heads(self, x, positions=None):
        q, k, v = super().heads(x, positions)
        return rotated(q, positions), rotated(k, positions), v


@pytest.mark.parametrize("use_cache", [True, False])
def test_an_idea_that_rotates_q_and_k_by_the_positions_heads_gets_decodes_batched_as_alone(use_cache):
    """A rotary idea read its positions from the cache's length, the only thing its layer had: once a row of the batch
    slid past the context, that counted columns, not positions, and every row's text changed. heads() gets each
    token's position in its row."""
    model = tiny(context_len=48)
    for block in model.blocks:
        block.attn.__class__ = RotaryAttention
    prompts = prompts_of(3, 17, 9, 30)
    config = GenerationConfig(max_new_tokens=60, use_cache=use_cache, stop_at_eot=False)  # slides past 48
    batched = generate_tokens(model, prompts, config, eot_id=EOT)
    assert batched == [generate_tokens(model, [p], config, eot_id=EOT)[0] for p in prompts]
    assert batched != generate_tokens(tiny(context_len=48), prompts, config, eot_id=EOT)  # it rotates


class PositionsByAnotherName(MultiHeadAttention):
    seen: ClassVar[list] = []

    def heads(self, x, pos=None):  # as written when heads() first took them (then passed by position)
        self.seen.append(pos)
        return super().heads(x, pos)


class PositionsByKeyword(PositionsByAnotherName):
    seen: ClassVar[list] = []

    def heads(self, x, *, positions=None):
        self.seen.append(positions)
        return MultiHeadAttention.heads(self, x, positions)


class PositionsPassedOn(PositionsByAnotherName):
    seen: ClassVar[list] = []

    def heads(self, x, **kwargs):  # a wrapper that passes them on
        self.seen.append(kwargs.get("positions"))
        return MultiHeadAttention.heads(self, x, **kwargs)


class PositionsByNameAndMore(PositionsByAnotherName):
    seen: ClassVar[list] = []

    def heads(self, x, pos=None, **kwargs):
        self.seen.append(pos)
        return MultiHeadAttention.heads(self, x, pos)


class HeadsOfBefore(MultiHeadAttention):
    def heads(self, x):  # an idea's override written before heads() took positions
        q, k, v = super().heads(x)
        return q, k, v * 0.5


def test_an_idea_s_heads_written_before_positions_still_runs_and_every_port_passes_them_on():
    """heads(x, positions) broke every heads(self, x) override (TypeError); and the ported ideas' own Blocks passed
    no positions, so a rotary idea built in one (README: as attn_temp does) got None for padded rows."""
    model = tiny()
    for block in model.blocks:
        block.attn = HeadsOfBefore(32, 4)
    generate_tokens(model, prompts_of(3, 9), GenerationConfig(max_new_tokens=5), eot_id=EOT)
    for taker in (PositionsByAnotherName, PositionsByKeyword, PositionsPassedOn, PositionsByNameAndMore):
        for block in model.blocks:
            block.attn = taker(32, 4)
        generate_tokens(model, prompts_of(3, 9), GenerationConfig(max_new_tokens=2), eot_id=EOT)
        assert taker.seen and all(p is not None for p in taker.seen), taker
    for exp in TINY_VERSIONS:
        ported = registered()[exp].factory(None).build_model().eval()
        seen: list = []
        for module in ported.modules():
            if isinstance(module, MultiHeadAttention):
                module.register_forward_pre_hook(lambda _m, _a, kwargs, seen=seen: seen.append(kwargs.get("positions")),
                                                 with_kwargs=True)
        generate_tokens(ported, prompts_of(3, 9), GenerationConfig(max_new_tokens=2), eot_id=EOT)
        assert seen and all(p is not None for p in seen), exp


class GroupedQueryAttention(MultiHeadAttention):
    def heads(self, x, positions=None):
        q, k, v = super().heads(x, positions)
        return q, k[:, ::2], v[:, ::2]  # half as many key/value heads as query heads


def test_keys_that_do_not_fit_the_cache_name_the_method_to_override():
    """An attention with fewer key/value heads than query heads trained, then generate failed in the cache's copy with
    torch's 'The expanded size of the tensor (4) must match the existing size (2)'."""
    model = tiny()
    for block in model.blocks:
        block.attn.__class__ = GroupedQueryAttention
    with pytest.raises(ConfigError, match=r"keys \[1, 2, 5, 8\] and values \[1, 2, 5, 8\] do not fit this KV cache "
                                          r"of \[batch, heads, positions, head_dim\] = \[1, 4, 128, 8\]: .* overrides "
                                          r"LMBase.new_cache"):
        generate_tokens(model, prompts_of(5), GREEDY, eot_id=EOT)


def test_a_forward_past_the_context_or_with_another_batch_s_cache_says_so():
    """A notebook's forward of 65 tokens through a model of context 64, or 10 after 60 cached, was the position
    embedding's bare IndexError; a cache made for 2 rows fed 1 blamed grouped-query attention."""
    model = tiny(context_len=64)
    with pytest.raises(ValueError, match=r"^65 tokens after 0 cached reach past context_len=64: feed at most 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 60, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=r"^10 tokens after 60 cached reach past context_len=64: feed at most 4"):
        model(torch.zeros(1, 10, dtype=torch.long), cache)
    with pytest.raises(ConfigError, match=r"^a batch of 1 for a KV cache of 2 rows: model.new_cache\(batch_size\)"):
        model(torch.zeros(1, 5, dtype=torch.long), model.new_cache(2))


def test_the_cache_is_preallocated_and_never_reallocated():
    model = tiny(context_len=32)
    cache = model.new_cache(1)
    pointers = [(c.keys.data_ptr(), c.values.data_ptr(), c.max_len) for c in cache]
    made = []
    model.new_cache = lambda batch_size: made.append(batch_size) or cache
    generate_tokens(model, prompts_of(5), GenerationConfig(max_new_tokens=70, stop_at_eot=False), eot_id=EOT)
    assert made == [1]  # one cache for the whole generation, across the slides past the 32-token context
    assert [(c.keys.data_ptr(), c.values.data_ptr(), c.max_len) for c in cache] == pointers
    assert all(0 < c.length <= 32 for c in cache)  # and the decoding filled it


def test_overflow_past_the_context_produces_text(capsys):
    model = tiny(context_len=16)
    prompt = "a prompt much longer than this model's sixteen-token context"
    outputs = model.generate_prompts([prompt, "short"], max_new_tokens=40, stop_at_eot=False)
    assert all(len(o) > 0 for o in outputs)
    assert "prompt 1 has 60 tokens, more than the context (16); using its last 16" in capsys.readouterr().err


def test_one_string_or_no_prompts_is_a_clear_error_not_a_batch_of_characters():
    """generate_prompts("ROMEO:") gave six continuations, one per character; train_prompts a loss over them."""
    model = tiny()
    for call in (model.generate_prompts, model.train_prompts):
        with pytest.raises(TypeError, match=r"prompts should be a list of strings, like \['ROMEO:'\], not one string"):
            call("ROMEO:")
        with pytest.raises(ValueError, match="no prompts given"):
            call([])


def test_train_prompts_trains_on_every_token_of_a_text_longer_than_the_context():
    """It kept the first context_len tokens of each text and dropped the rest without a word."""
    model = tiny(context_len=16)
    texts = ["a" * 50, "bc"]
    loss, stats = model.train_prompts(texts)
    assert stats["tokens"] == sum(len(t) + 1 for t in texts)  # each byte and the closing eot, once
    windows = [model.train_prompts([t])[1] for t in ("a" * 15, "a" * 16)]
    assert [w["tokens"] for w in windows] == [16, 17]  # one full window; one more token: a second sample
    loss.backward()


def test_stop_at_eot_ends_each_row_on_its_own():
    model = tiny()
    with torch.no_grad():
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(257))
        model.lm_head.bias[EOT] = 1e4  # eot is always the most likely token
    out = generate_tokens(model, prompts_of(3, 8), GenerationConfig(max_new_tokens=20), eot_id=EOT)
    assert out == [[], []]


def test_the_repetition_penalty_leaves_the_start_of_document_eot_alone():
    """Every prompt starts with eot, which counted as seen text: a penalty made the end of a text less likely."""
    model = tiny()
    with torch.no_grad():
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(257))
        model.lm_head.bias[EOT] = 5.0  # eot leads by a margin a penalty of 1e4 on it would overturn
    config = GenerationConfig(max_new_tokens=5, repetition_penalty=1e4)
    assert generate_tokens(model, prompts_of(3), config, eot_id=EOT) == [[]]  # it stops at once, as unpenalised


def test_same_seed_same_samples_and_another_seed_others():
    model = tiny()
    config = GenerationConfig(max_new_tokens=40, do_sample=True, top_k=50, top_p=0.95, repetition_penalty=1.2)

    def draw(seed: int, use_cache: bool = True) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return generate_tokens(model, prompts_of(4, 9), dataclasses.replace(config, use_cache=use_cache), eot_id=EOT,
                               generator=generator)

    cached = draw(7)
    assert draw(7) == cached
    assert draw(8) != cached
    assert draw(7, use_cache=False) == cached  # the same seed's draws without the cache: same logits, same sampling
    text = model.generate_prompts(["Hi"], do_sample=True, seed=3)
    assert text == model.generate_prompts(["Hi"], do_sample=True, seed=3)


def test_a_temperature_without_do_sample_is_said_to_decode_greedily(capsys):
    """generate_prompts(p, 50, 0.8) reads like sampling at 0.8 and decoded greedily without a word."""
    model = tiny()
    assert model.generate_prompts(["Hi"], 5, 0.8) == model.generate_prompts(["Hi"], 5)
    err = capsys.readouterr().err
    assert err.count("notice: do_sample=false decodes greedily, so temperature has no effect; do_sample=true "
                     "samples with it") == 1
    model.generate_prompts(["Hi"], 5, 0.8, do_sample=True, top_k=3, seed=1)
    assert "decodes greedily" not in capsys.readouterr().err
    model.generate_prompts(["Hi"], 5, 0.0, do_sample=True, top_k=3)  # greedy too, as the num_samples notice says
    assert "notice: temperature=0 decodes greedily, so top_k has no effect; a temperature above 0 samples with it" \
        in capsys.readouterr().err


def test_top_k_1_equals_greedy():
    model = tiny()
    prompts = prompts_of(6, 2)
    sampled = generate_tokens(model, prompts, GenerationConfig(max_new_tokens=50, do_sample=True, top_k=1,
                                                               stop_at_eot=False),
                              eot_id=EOT, generator=torch.Generator().manual_seed(0))
    greedy = generate_tokens(model, prompts, GenerationConfig(max_new_tokens=50, stop_at_eot=False), eot_id=EOT)
    assert sampled == greedy


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0]])
    config = GenerationConfig(do_sample=True, temperature=0.0)
    assert pick_next(logits, config).tolist() == [1]


@pytest.mark.parametrize("settings", [{"temperature": 1e-45}, {"top_p": 1e-300},
                                      {"temperature": 1e-45, "top_p": 1e-300}, {"temperature": 1e-46},
                                      {"temperature": 1e-308}, {"temperature": 5e-324}])
def test_settings_at_the_edge_of_float32_still_draw_the_top_token(settings):
    """A temperature that overflows the scores (or, below float32's smallest, turns 0: 0/0 at the top token), or a
    top_p that rounds to 0, left no finite probability: torch.multinomial raised 'probability tensor contains
    either inf, nan or element < 0'."""
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0], [5.0, -2.0, 4.0, float("-inf")]])
    config = GenerationConfig(do_sample=True, **settings)
    for seed in range(5):
        assert pick_next(logits, config, generator=torch.Generator().manual_seed(seed)).tolist() == [1, 0]


@pytest.mark.parametrize("penalty", [1e-38, 1e-308])
def test_a_tiny_repetition_penalty_favours_the_seen_tokens_without_nan(penalty):
    """logits / 1e-38 overflowed float32 to inf, and inf - inf made the sampled distribution NaN."""
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0]])
    seen = torch.tensor([[True, False, True, False]])
    for do_sample in (True, False):
        config = GenerationConfig(do_sample=do_sample, repetition_penalty=penalty)
        picks = {pick_next(logits, config, seen, torch.Generator().manual_seed(s)).item() for s in range(10)}
        assert picks <= {0, 2}  # the seen tokens; past float32's range (1e-308) they tie


def test_a_huge_repetition_penalty_on_a_vocabulary_all_seen_and_negative_draws_from_it_all():
    """The penalty (1e39, inf in float32) sent every logit to -inf: sampling raised torch's 'probability tensor
    contains inf', and greedy picked token 0 of nothing."""
    logits = -torch.rand(2, 10) - 0.1
    seen = torch.ones(2, 10, dtype=torch.bool)
    config = GenerationConfig(do_sample=True, repetition_penalty=1e39)
    picks = {pick_next(logits, config, seen, torch.Generator().manual_seed(s))[0].item() for s in range(200)}
    assert len(picks) > 5  # every token equally penalized: any may come
    banned = torch.tensor([[2.0, 1.0, float("-inf"), float("-inf")]])  # a model's own -inf stays out of the draw
    config = GenerationConfig(do_sample=True, temperature=1e38, repetition_penalty=1.2)
    assert {pick_next(banned, config, seen[:1, :4], torch.Generator().manual_seed(s)).item() for s in range(200)} \
        == {0, 1}
    overflowed = torch.tensor([[float("inf"), 1.0, 0.0, -1.0]])  # an fp16 logit past its range: drawn, as before
    assert pick_next(overflowed, GenerationConfig(do_sample=True, repetition_penalty=1.5), seen[:1, :4]).item() == 0


def test_generate_prompts_takes_numpy_numbers():
    """Values from np.arange or np.linspace (a notebook's sweep of a setting) were refused: 'top_k=np.int64(5)
    should be an integer'."""
    model = tiny()
    expected = model.generate_prompts(["a"], 3, do_sample=True, temperature=0.5, top_k=5, seed=3)
    assert model.generate_prompts(["a"], np.int64(3), do_sample=np.bool_(True), temperature=np.float32(0.5),
                                  top_k=np.int64(5), seed=np.int64(3)) == expected


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()

    def kept(p: float) -> list[bool]:
        return torch.isfinite(top_p_filter(logits, p))[0].tolist()

    assert kept(0.4) == [False, True, False, False]  # 0.5 alone reaches 0.4
    assert kept(0.7) == [False, True, False, True]  # 0.5 + 0.3 = 0.8 >= 0.7
    assert kept(0.85) == [False, True, True, True]  # needs 0.15 too (0.95)
    assert kept(0.99) == [True, True, True, True]
    assert kept(1.0) == [True, True, True, True]
    assert kept(1e-9) == [False, True, False, False]  # the most likely token always survives
    survivors = torch.softmax(top_p_filter(logits, 0.7), -1)
    torch.testing.assert_close(survivors, torch.tensor([[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]]))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [0.0, -1.0, 5.0, 1.0]])
    kept = torch.isfinite(top_k_filter(logits, 2)).tolist()
    assert kept == [[False, True, True, False], [False, False, True, True]]
    assert torch.equal(top_k_filter(logits, 10), logits)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -2.0, 1.0, -0.5]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -0.5]]
    # it applies to greedy decoding too: token 0 loses its lead once seen
    config = GenerationConfig(repetition_penalty=2.0)
    assert pick_next(torch.tensor([[2.0, 1.5]]), config, seen=torch.tensor([[True, False]])).tolist() == [1]


def test_sampling_draws_from_the_processed_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).expand(20000, 4)
    config = GenerationConfig(do_sample=True, temperature=0.5, top_k=2)
    counts = torch.bincount(pick_next(logits, config, generator=torch.Generator().manual_seed(0)), minlength=4)
    expected = torch.softmax(torch.tensor([2.0, 3.0]) / 0.5, -1)  # only the top 2, sharpened
    assert counts[:2].tolist() == [0, 0]
    torch.testing.assert_close(counts[2:] / 20000, expected, atol=0.015, rtol=0)


@pytest.mark.parametrize("bad, message", [
    ({"temperature": -0.5}, "temperature=-0.5 must be >= 0"),
    ({"top_p": 0.0}, "top_p=0.0 must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p=1.5 must be in (0, 1]"),
    ({"top_k": 0}, "top_k=0 must be >= 1"),
    ({"repetition_penalty": 0}, "repetition_penalty=0 must be > 0"),
    ({"max_new_tokens": "ten"}, "max_new_tokens='ten' should be an integer"),
])
def test_bad_settings_are_one_clear_error(bad, message):
    from lmplay.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GenerationConfig(**bad)


def test_prompts_start_with_bos_and_long_ones_keep_their_end():
    tok = get_tokenizer("bytes")
    notes = []
    encoded = encode_prompts(tok, ["abc", "x" * 20, "y" * 8, "z" * 7], context_len=8, notify=notes.append)
    assert encoded == [[EOT, 97, 98, 99], [120] * 8, [121] * 8, [EOT, *[122] * 7]]
    assert notes == ["prompt 2 has 20 tokens, more than the context (8); using its last 8"]  # the user's own tokens


def test_streamed_text_equals_the_result_even_inside_multibyte_characters():
    tok = get_tokenizer("bytes")
    pieces = []
    stream = TextStream(tok, pieces.append)
    text = "héllo — 日本 ok"
    for token in tok.encode(text):
        stream.add(token)
    stream.close()
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_generate_text_streams_what_it_returns():
    model = tiny()
    pieces = []
    out = generate_text(model, ["Once"], GenerationConfig(max_new_tokens=30, stop_at_eot=False), stream=pieces.append)
    assert "".join(pieces) == out[0]
    assert model.training is False


def test_generate_prompts_restores_training_mode():
    model = tiny().train()
    model.generate_prompts(["abc"], max_new_tokens=3)
    assert model.training


def test_a_vocabulary_padded_past_the_tokenizers_never_yields_a_padding_id():
    torch.manual_seed(0)
    model = widened(GPT2ish(vocab_size=320, context_len=64, num_blocks=2, embed_dim=32, num_heads=4,
                            tokenizer="bytes"))
    with torch.no_grad():
        model.lm_head.weight[257:] = 0
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(320))
        model.lm_head.bias[257:] = 1e4  # the padding columns would win every argmax
    out = generate_tokens(model, prompts_of(5), GenerationConfig(max_new_tokens=30, stop_at_eot=False), eot_id=EOT)
    assert len(out[0]) == 30 and max(out[0]) < 257


def test_nan_scores_are_a_clear_error_not_a_multinomial_traceback():
    """Finite weights can still give NaN scores (an fp16 overflow under amp): the draw must not hide why."""
    logits = torch.tensor([[0.0, float("nan"), 1.0]])
    for config in (GenerationConfig(do_sample=False), GenerationConfig(do_sample=True)):
        with pytest.raises(ConfigError, match="next-token scores are NaN"):
            pick_next(logits, config)


def test_a_model_refuses_a_vocabulary_smaller_than_its_tokenizers():
    """It built, then every call raised an IndexError from the embedding (a device-side assert on CUDA)."""
    with pytest.raises(ConfigError, match=r"vocab_size=257 is smaller than the 'gpt2' tokenizer's 50257 ids"):
        GPT2ish(vocab_size=257, context_len=32, num_blocks=1, embed_dim=16, num_heads=1)


def test_prompts_may_come_as_any_iterable_of_strings():
    """A generator was read up by the type check and then seen as no prompts."""
    model = tiny()
    expected = model.generate_prompts(["ab", "cd"], max_new_tokens=3)
    assert model.generate_prompts((p for p in ["ab", "cd"]), max_new_tokens=3) == expected
    assert model.generate_prompts(("ab", "cd"), max_new_tokens=3) == expected
    assert model.train_prompts(iter(["ab", "cd"]))[1]["tokens"] == model.train_prompts(["ab", "cd"])[1]["tokens"]


@pytest.mark.parametrize("prompts, message", [([1, 2], r"prompt 1 is int \(1\), not a string"),
                                              (["ok", None], r"prompt 2 is NoneType \(None\), not a string"),
                                              ([b"abc"], r"prompt 1 is bytes"),
                                              ({"a": 1}, r"a list of strings, not dict"),
                                              ({"a", "b"}, r"a list of strings, not set"),  # no order
                                              (None, r"a list of strings, not NoneType"),
                                              (b"abc", r"a list of strings, not bytes")])
def test_prompts_that_are_not_strings_are_refused_naming_the_item(prompts, message):
    """Ints and None were an AttributeError from inside the tokenizer, and a dict's keys were trained on."""
    model = tiny()
    with pytest.raises(TypeError, match=message):
        model.generate_prompts(prompts)
    with pytest.raises(TypeError, match=message):
        model.train_prompts(prompts)


@pytest.mark.parametrize("seed, message", [("1", r"seed='1' should be an integer"),
                                           (2**70, r"seed=1180591620717411303424 is out of torch's range")])
def test_generate_prompts_refuses_a_seed_torch_cannot_take(seed, message):
    with pytest.raises(ConfigError, match=message):
        tiny().generate_prompts(["a"], do_sample=True, seed=seed)


def test_replacing_a_runs_checkpoint_sets_the_run_aside_so_the_next_training_save_keeps_it(tmp_path, monkeypatch):
    """Kept as model.lmp.bak only, the replaced run (fine-tuned after an import) was rotated away by the next
    training save, and its stats.json and TensorBoard files read as the new run's."""
    from lmplay.generation.loading import save_model
    from lmplay.runner import checkpoint, get_runner

    run = tmp_path / "run"
    save_model(get_runner("test_runner").build_model(), "test_runner", run / "model.lmp")
    checkpoint.save(checkpoint.load(run), run / "model.lmp")  # training's saves: model.lmp and its .bak
    (run / "stats.json").write_text("{}")
    (run / "tb").mkdir()
    fine_tuned = (run / "model.lmp").read_bytes()
    with pytest.raises(ConfigError, match=r"pass replace=True \(a run there is set aside in replaced_<time>/\)"):
        save_model(get_runner("test_runner").build_model(), "test_runner", run / "model.lmp")
    save_model(get_runner("test_runner").build_model(), "test_runner", run / "model.lmp", replace=True)
    aside, = run.glob("replaced_*")
    assert sorted(p.name for p in aside.iterdir()) == ["model.lmp", "model.lmp.bak", "stats.json", "tb"]
    assert (aside / "model.lmp").read_bytes() == fine_tuned
    assert sorted(p.name for p in run.iterdir()) == ["model.lmp", aside.name]
    checkpoint.save(checkpoint.load(run), run / "model.lmp")  # the next training save
    assert (aside / "model.lmp").read_bytes() == fine_tuned
    (run / "stats.json").write_text("{}")
    imported = (run / "model.lmp").read_bytes()

    def full_disk(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match=r"No space left on device\); the previous one is intact"):
        save_model(get_runner("test_runner").build_model(), "test_runner", run / "model.lmp", replace=True)
    monkeypatch.undo()
    assert (run / "model.lmp").read_bytes() == imported and len(list(run.glob("replaced_*"))) == 1  # nothing moved
    assert checkpoint.write_out(checkpoint.load(run), run / "model.lmp", in_place=True) is None  # the run goes on
    assert (run / "model.lmp.bak").read_bytes() == imported and (run / "stats.json").is_file()


def test_a_model_saved_from_python_loads_everywhere_and_loading_leaves_the_random_state(tmp_path, monkeypatch):
    """A registered version's model, trained in Python, saved with save_model, loads as the CLI's commands do;
    load_model drew the random initial weights it then overwrote from the caller's random state."""
    from lmplay.generation.loading import load_model, save_model
    from lmplay.inspect import describe
    from lmplay.runner import checkpoint, get_runner

    model = get_runner("test_runner").build_model()
    assert (model.tokenizer_name, model.context_len, model.construction_args["vocab_size"]) == ("bytes", 64, 257)
    loss, _ = model.train_prompts(["Some text to learn."])
    loss.backward()
    monkeypatch.setenv("HOME", str(tmp_path))
    path = save_model(model, "test_runner", "~/run/model.lmp")
    assert path == tmp_path / "run" / "model.lmp"
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    loaded, exp = load_model("~/run", "auto")  # a run dir under ~, on the CLI's device=auto
    assert exp == "test_runner" and torch.rand(1) == expected
    assert describe(str(path)).endswith("config       none (no training run wrote it: saved from Python, or imported)")
    assert loaded.generate_prompts(["To"], max_new_tokens=8) == model.eval().generate_prompts(["To"], max_new_tokens=8)
    assert load_model(path, "cpu:0")[0].device == torch.device("cpu") == load_model(path, None)[0].device
    with pytest.raises(ConfigError, match=r"device='gpu' is no device torch knows"):
        load_model(path, "gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device=cuda:0 but no CUDA GPU is visible"):
            load_model(path, "cuda:0")  # was torch's AssertionError, at .to()
    with pytest.raises(ConfigError, match=r"model.lmp exists .* pass replace=True"):  # a run's checkpoint: kept
        save_model(torch.compile(loaded), "test_runner", path)  # (a compiled model saves as the model it wraps)
    save_model(torch.compile(loaded), "test_runner", path, replace=True)
    assert (tmp_path / "run" / "model.lmp.bak").is_file()
    with pytest.raises(ConfigError, match=r"a GPT2ish cannot be saved as experiment 'value_norm_test', whose model "
                                          r"is ValueNormGPT"):
        save_model(model, "value_norm_test", tmp_path / "other.lmp")
    with pytest.raises(TypeError, match=r"checkpoint\['note'\] is a numpy.float64, which a checkpoint cannot hold"):
        checkpoint.save({**checkpoint.load(path), "note": np.float64(1.5)}, tmp_path / "bad.lmp")
    assert not (tmp_path / "bad.lmp").exists()  # refused before writing: load would refuse it for good


def test_a_model_of_a_config_of_one_s_own_saves_under_the_name_load_model_gave(tmp_path):
    """load_model of a run of `--config-dir DIR exp=myvar` (a settings-only variant) returned 'myvar', which
    save_model then refused as not registered, advising a pip install the variant does not need; one named after its
    base (test_runner_wide) was refused as a typo of test_runner."""
    from lmplay.generation.loading import load_model, save_model

    (tmp_path / "conf" / "exp").mkdir(parents=True)
    (tmp_path / "conf" / "exp" / "test_runner_wide.yaml").write_text(  # named after its base, as the README's are
        "# @package _global_\ndefaults: [test_runner]\nmodel: {embed_dim: 48}\n")
    run_cli("lmplay.train", "--config-dir", str(tmp_path / "conf"), "exp=test_runner_wide", "max_steps=1",
            "device=cpu", f"hydra.run.dir={tmp_path / 'run'}", check=True)
    model, exp = load_model(tmp_path / "run")
    again, exp_again = load_model(save_model(model, exp, tmp_path / "copy" / "model.lmp"))  # not refused as a typo
    assert exp == exp_again == "test_runner_wide" and again.construction_args["embed_dim"] == 48
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_save_model_once_an_epoch_to_one_path_keeps_the_last_two(tmp_path):
    """replace=True refused the third save: the .bak of the second would have been rotated away."""
    from lmplay.generation.loading import load_model, save_model
    from lmplay.runner import get_runner

    model, path = get_runner("test_runner").build_model(), tmp_path / "model.lmp"
    for epoch in range(3):
        with torch.no_grad():
            model.lm_head.weight[0, 0] = epoch
        save_model(model, "test_runner", path, replace=True)
    assert load_model(path)[0].lm_head.weight[0, 0] == 2
    assert load_model(tmp_path / "model.lmp.bak")[0].lm_head.weight[0, 0] == 1


def test_save_model_refuses_weights_that_are_not_finite_and_arguments_of_the_wrong_type(tmp_path):
    """NaN weights were saved (a resume then blamed the model's code); exp=5 was difflib's TypeError."""
    from lmplay.generation.loading import load_model, save_model
    from lmplay.runner import get_runner

    model = get_runner("test_runner").build_model()
    with pytest.raises(ConfigError, match=r"^exp=5 should be the name of the experiment"):
        save_model(model, 5, tmp_path / "model.lmp")
    with pytest.raises(ConfigError, match=r"^path=5 should be a checkpoint's path"):
        load_model(5)
    with pytest.raises(ConfigError, match=r"^name=5 should be an experiment's name"):
        get_runner(5)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(ConfigError, match=r"^the model's weights hold NaN or inf, which no checkpoint keeps"):
        save_model(model, "test_runner", tmp_path / "model.lmp")
    assert not (tmp_path / "model.lmp").exists()


def test_save_model_refuses_a_near_typo_of_a_version_s_name(tmp_path):
    """Accepting the name of a config of one's own let 'test_runer' through: a checkpoint no command could resume."""
    from lmplay.generation.loading import save_model
    from lmplay.runner import get_runner

    with pytest.raises(ConfigError, match="did you mean 'test_runner'"):
        save_model(get_runner("test_runner").build_model(), "test_runer", tmp_path / "model.lmp")
    assert not (tmp_path / "model.lmp").exists()
