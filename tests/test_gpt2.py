"""experiments/gpt2 is GPT-2 exactly: Hugging Face weights import, give the same logits and the same greedy text."""

import re

import pytest
import torch
from conftest import compose_config, make_runner, run_cli
from hydra.utils import get_class

from experiments.gpt2.import_hf import build_checkpoint
from experiments.gpt2.model import GPT2
from lmplay.errors import ConfigError
from lmplay.generation.config import GenerationConfig
from lmplay.generation.decode import generate_tokens
from lmplay.generation.loading import load_model
from lmplay.runner import checkpoint, registered

transformers = pytest.importorskip("transformers")

EOT = 256
SHAPE = {"vocab_size": 257, "n_positions": 128, "n_embd": 32, "n_layer": 2, "n_head": 4}




@pytest.fixture(scope="module")
def hf_model():
    """A small randomly initialised transformers GPT-2 (no download), with its biases made non-zero."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(**SHAPE, bos_token_id=EOT, eos_token_id=EOT)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.1)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = EOT
    return model


@pytest.fixture(scope="module")
def imported(hf_model, tmp_path_factory):
    """The HF model saved as save_pretrained does (model.safetensors + config.json), imported, loaded back."""
    src = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(src)
    path = src / "model.lmp"
    checkpoint.save(build_checkpoint(str(src)), path)
    return load_model(path)[0]


def test_logits_equal_transformers(hf_model, imported):
    ids = torch.randint(0, 257, (3, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (hf_model(ids).logits - imported(ids)).abs().max().item()
    assert diff < 1e-4


def test_the_architecture_is_gpt2s(imported):
    assert imported.lm_head.weight is imported.embed.tok.weight
    block = imported.blocks[0]
    assert block.mlp.act.approximate == "tanh"
    assert block.ln1.eps == block.ln2.eps == imported.ln_f.eps == 1e-5
    assert block.attn.qkv.bias is not None and block.mlp.proj.bias is not None
    assert imported.construction_args == {"tokenizer": "bytes", "context_len": 128, "vocab_size": 257,
                                          "num_blocks": 2, "embed_dim": 32, "num_heads": 4, "dropout": 0.0}


@pytest.mark.parametrize("length", [1, 9])
def test_greedy_generation_equals_transformers_generate(hf_model, imported, length):
    prompt = torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(length))
    theirs = hf_model.generate(prompt, max_new_tokens=110, do_sample=False)[0, length:].tolist()
    ours = generate_tokens(imported, prompt.tolist(), GenerationConfig(max_new_tokens=110, stop_at_eot=False),
                           eot_id=EOT)
    assert ours[0] == theirs


def test_left_padded_batch_equals_transformers_with_attention_mask(hf_model, imported):
    prompts = [[5, 6, 7], [10, 20, 30, 40, 50, 60, 70]]
    ids = torch.tensor([[EOT] * 4 + prompts[0], prompts[1]])
    mask = torch.tensor([[0] * 4 + [1] * 3, [1] * 7])
    theirs = hf_model.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=False)[:, 7:].tolist()
    ours = generate_tokens(imported, prompts, GenerationConfig(max_new_tokens=40, stop_at_eot=False), eot_id=EOT)
    assert ours == theirs


def test_greedy_with_cache_equals_without_on_imported_weights(imported):
    prompt = [[EOT, 1, 2, 3, 4]]
    cached = generate_tokens(imported, prompt, GenerationConfig(max_new_tokens=200, stop_at_eot=False), eot_id=EOT)
    uncached = generate_tokens(imported, prompt, GenerationConfig(max_new_tokens=200, stop_at_eot=False,
                                                                  use_cache=False), eot_id=EOT)
    assert cached == uncached  # 205 tokens: past the context of 128, the window slides the same way in both


def test_a_plain_state_dict_without_prefix_imports_through_the_cli(hf_model, tmp_path):
    """GPT2Model-style names (OpenAI's upload has no `transformer.` prefix); no config.json, so --num-heads."""
    torch.save(hf_model.transformer.state_dict(), tmp_path / "pytorch_model.bin")
    out = tmp_path / "gpt2.lmp"
    proc = run_cli("experiments.gpt2.import_hf", str(tmp_path / "pytorch_model.bin"), str(out), "--num-heads", "4")
    assert proc.returncode == 0, proc.stderr
    assert "experiment gpt2, 2 blocks, 32 wide, 4 heads, context 128, tokenizer bytes" in proc.stdout
    model, exp = load_model(out)
    ids = torch.randint(0, 257, (2, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (hf_model(ids).logits - model(ids)).abs().max().item() < 1e-4
    assert exp == "gpt2"
    before = out.read_bytes()
    import_again = ["experiments.gpt2.import_hf", str(tmp_path / "pytorch_model.bin"), str(out), "--num-heads", "4"]
    proc = run_cli(*import_again)  # over a run fine-tuned there: the README's flow made that easy
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"{out} exists (a run fine-tuned there would be lost); write another path, or pass --replace" in proc.stderr
    assert out.read_bytes() == before
    run_cli(*import_again, "--replace", check=True)
    assert (tmp_path / "gpt2.lmp.bak").read_bytes() == before
    proc = run_cli(*import_again, "--replace")  # a second one would rotate the kept file away
    assert proc.returncode == 2 and "gpt2.lmp.bak exists, and replacing" in proc.stderr
    assert (tmp_path / "gpt2.lmp.bak").read_bytes() == before


@pytest.mark.parametrize("out, tokenizer, message", [
    ("{tmp}", None, "is a directory; name the checkpoint file to write, e.g. "),
    ("{tmp}/afile/model.lmp", None, "cannot make the directory {tmp}/afile (File exists); give another path"),
    ("{tmp}/x.lmp", "gpt2", "tokenizer gpt2 has 50257 tokens, more than the model's vocabulary (257)"),
])
def test_import_mistakes_are_one_line(hf_model, tmp_path, out, tokenizer, message):
    torch.save(hf_model.transformer.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "afile").touch()
    args = ["--tokenizer", tokenizer] if tokenizer else []
    proc = run_cli("experiments.gpt2.import_hf", str(tmp_path / "pytorch_model.bin"), out.format(tmp=tmp_path),
                   "--num-heads", "4", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message.format(tmp=tmp_path) in proc.stderr


def test_a_tokenizer_far_smaller_than_the_weights_vocabulary_is_refused():
    """GPT-2's 50257 rows read as 257 byte embeddings made a model that writes noise."""
    from experiments.gpt2.import_hf import pick_tokenizer

    assert pick_tokenizer(50304, "gpt2") == "gpt2" and pick_tokenizer(320, "bytes") == "bytes"  # padded for speed
    with pytest.raises(ConfigError, match=r"vocabulary \(50257\) is far larger than tokenizer bytes's \(257\).* leave "
                                          r"--tokenizer out"):
        pick_tokenizer(50257, "bytes")
    with pytest.raises(ConfigError, match=r"lmplay has no tokenizer of that size"):  # leaving it out asks for one
        pick_tokenizer(512, "bytes")


def test_generate_cli_samples_an_imported_checkpoint(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path)
    checkpoint.save(build_checkpoint(str(tmp_path)), tmp_path / "model.lmp")
    proc = run_cli("lmplay.generate", f"checkpoint={tmp_path / 'model.lmp'}", "prompt=Hello", "max_new_tokens=20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Hello") and "experiment gpt2" in proc.stderr
    inspect = run_cli("lmplay.inspect", str(tmp_path / "model.lmp"), check=True)  # a model with no training yet
    assert "experiment   gpt2" in inspect.stdout and "training     none yet" in inspect.stdout
    params = re.search(r"([\d,]+) parameters", proc.stderr).group(1)  # the tied lm_head counts once in both
    assert f"parameters   {params}\n" in inspect.stdout


def test_training_resumes_from_an_imported_checkpoint(imported, tmp_path):
    ckpt = {"exp": "gpt2", "config": "", "rng": checkpoint.rng_state(),
            "components": {"model": {"state_args": dict(imported.construction_args),
                                     "state": {"weights": imported.state_dict()}}}}
    text = tmp_path / "text.txt"
    text.write_text("A few lines to fine-tune on.\n" * 20)
    runner = make_runner(["exp=gpt2", "device=cpu", "tokenizer=bytes", "context_len=128", "batch_size=8",
                          "mini_batch_size=4", "curriculum=text_file", f"curriculum.path={text}",
                          f"curriculum.cache_dir={tmp_path / 'cache'}", "curriculum.validation_fraction=0"],
                         tmp_path, ckpt)
    assert isinstance(runner.model, GPT2)
    assert runner.model.lm_head.weight is runner.model.embed.tok.weight
    for name, tensor in imported.state_dict().items():
        assert torch.equal(runner.model.state_dict()[name], tensor), name


def test_importer_refuses_what_is_not_gpt2(hf_model, tmp_path):
    state = dict(hf_model.state_dict())
    with pytest.raises(ConfigError, match="not a GPT-2 state dict: unexpected tensors"):
        torch.save({**state, "transformer.h.0.attn.q_norm.weight": torch.ones(4)}, tmp_path / "extra.bin")
        build_checkpoint(str(tmp_path / "extra.bin"), num_heads=4)
    with pytest.raises(ConfigError, match="differs from the token embedding"):
        torch.save({**state, "lm_head.weight": torch.zeros(257, 32)}, tmp_path / "untied.bin")
        build_checkpoint(str(tmp_path / "untied.bin"), num_heads=4)
    with pytest.raises(ConfigError, match="does not exist"):
        build_checkpoint(str(tmp_path / "missing.safetensors"))
    torch.save({"wte": torch.nn.Linear(2, 2)}, tmp_path / "code.bin")  # a pickled module: loading it runs code
    with pytest.raises(ConfigError, match="not a file of plain tensors") as refused:
        build_checkpoint(str(tmp_path / "code.bin"))
    assert "weights_only=False" not in str(refused.value)  # torch's own advice is to run the file's code
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "activation_function": "relu", "n_head": 4}')
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="activation_function='relu'"):
        build_checkpoint(str(tmp_path))
    # what were tracebacks, or a file written with damaged weights or a blamed flag nobody typed
    wpe = next(k for k in state if k.endswith("wpe.weight"))
    broken = {"no_wpe.bin": ({k: v for k, v in state.items() if k != wpe}, r"not a GPT-2 state dict: no wpe.weight"),
              "nan.bin": ({**state, wpe: torch.full_like(state[wpe], float("nan"))}, r"wpe.weight holds NaN or inf")}
    for name, (weights, message) in broken.items():
        torch.save(weights, tmp_path / name)
        with pytest.raises(ConfigError, match=message):
            build_checkpoint(str(tmp_path / name), num_heads=4)
    for text, message in (("{not json", r"config.json is not JSON"), ("[1, 2]", r"is not a JSON object of settings"),
                          ('{"n_head": 3}', r"config.json's n_head=3 does not divide the embedding width 32"),
                          ('{"layer_norm_epsilon": "1e-5"}', r"layer_norm_epsilon='1e-5' should be a number"),
                          ("[" * 100_000 + "]" * 100_000, r"config.json is not JSON \(nested too deep\)")):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ConfigError, match=message):
            build_checkpoint(str(tmp_path))


@pytest.mark.parametrize("exp, params", [("gpt2", 124_439_808), ("gpt2_medium", 354_823_168),
                                         ("gpt2_large", 774_030_080), ("gpt2_xl", 1_557_611_200)])
def test_versions_have_openais_shapes_and_configs(exp, params):
    """The registered versions, their conf/exp files and OpenAI's parameter counts agree (built on meta: no memory)."""
    runner = registered()[exp].factory()
    cfg = compose_config([f"exp={exp}"])
    assert get_class(cfg.model._target_) is runner.model_class is GPT2
    assert all(cfg.model[key] == value for key, value in runner.overrides.items())
    assert (cfg.tokenizer, cfg.context_len) == ("gpt2", 1024)
    with torch.device("meta"):
        model = runner.build_model(vocab_size=50257, tokenizer="gpt2", context_len=1024)
    assert model.parameter_count() == params


def test_a_hub_id_without_the_network_is_one_line_at_once(monkeypatch, tmp_path):
    """huggingface_hub retried for ~25 s, printing ten retry lines, before the same error."""
    from experiments.gpt2 import import_hf
    from lmplay.data import sources

    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ConfigError, match=r"cannot download gpt2 from the Hugging Face hub \(the hub is unreachable, "
                                          r"and the local HF cache has no copy\); download model.safetensors"):
        import_hf.download("gpt2")


def test_inspect_counts_parameters_not_buffers(tmp_path):
    """A persistent buffer (nanoGPT's causal-mask `bias`, a rotary table) is in the weights, not a parameter."""
    from experiments.gpt2ish.model import GPT2ish
    from lmplay.generation.loading import save_model
    from lmplay.inspect import describe

    model = GPT2ish(vocab_size=257, context_len=64, num_blocks=2, embed_dim=32, num_heads=2, tokenizer="bytes")
    for block in model.blocks:
        block.attn.register_buffer("bias", torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64))
    path = save_model(model, "test_runner", tmp_path / "model.lmp")
    assert f"parameters   {model.parameter_count():,}\n" in describe(str(path))
