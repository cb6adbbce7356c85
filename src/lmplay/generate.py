"""`python -m lmplay.generate` / `lmp_generator`: continue prompts with a checkpoint, streaming the tokens.

    python -m lmplay.generate checkpoint=outputs/gpt2ish_mini/model.lmp prompt="Once upon a time"
    lmp_generator --model model.lmp --prompt "Once upon a time"      # the seed's flags
    lmp_generator --model model.lmp "Once upon a time"              # a bare prompt

The checkpoint names its experiment; the model's code comes from the registry, never from the file.
"""

import contextlib
import dataclasses
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmplay.cli import fail, is_sweep, printable, reader_may_stop, report, translate_flags
from lmplay.config import CONF_DIR, check_value_types, override_key, override_value
from lmplay.device import amp_dtype, check_amp_dtype, pick_device, unused_amp_dtype
from lmplay.errors import ConfigError, LmplayError
from lmplay.files import checkpoint_file, home_expanded, no_checkpoint
from lmplay.generation.command_line import normalize
from lmplay.generation.config import GenerationConfig
from lmplay.hydra_app import readable_config, run_hydra_app
from lmplay.overrides import reject_added_keys

SEED_FLAGS = {"--model": "checkpoint", "--checkpoint": "checkpoint", "--prompt": "prompt",
              "--prompt-file": "prompt_file", "--device": "device", "--max-len": "max_new_tokens",
              "--max-new-tokens": "max_new_tokens", "--temperature": "temperature", "--top-k": "top_k",
              "--top-p": "top_p", "--repetition-penalty": "repetition_penalty", "--num-samples": "num_samples",
              "--seed": "seed"}
SEED_SWITCHES = {"--amp": "amp=true", "--sample": "do_sample=true", "--greedy": "do_sample=false"}


def typed_prompts(cfg: DictConfig) -> list[str]:
    """`prompt` as typed: text, never a config expression (`${HOME}` stays as written) or a number
    (`prompt=1e3` stays 1e3, not 1000.0); an escaped `\\${` (how an unclosed `${` reaches Hydra) is `${`."""
    raw = OmegaConf.to_container(cfg, resolve=False)["prompt"]
    if raw is None:
        return []
    if isinstance(raw, list):
        if nested := next((p for p in raw if isinstance(p, (list, dict))), None):
            raise ConfigError(f"prompt item {nested} is a list or mapping, not a prompt: a prompt list holds strings, "
                              f"like prompt=[a,b] (quote an item that holds brackets: prompt=\"['[b]']\")")
        return [str(p).replace("\\${", "${") for p in raw]
    if not isinstance(raw, str):  # Hydra read an unquoted number or true/false: take the text after `prompt=`
        raw = override_value(HydraConfig.get().overrides.task, "prompt") or str(raw)
    return [raw.replace("\\${", "${")]


def typed_path(cfg: DictConfig, key: str) -> str | None:
    """A path key's text (`${oc.env:RUNS}/x` resolved where it can be, else as typed), or None for null: a list,
    a number or an empty value is one line, not Hydra's traceback or the current directory."""
    raw = OmegaConf.to_container(cfg, resolve=False)[key]
    if raw is None and key == "prompt_file":
        return None
    if isinstance(raw, str) and "${" in raw:
        with contextlib.suppress(OmegaConfBaseException):  # one that cannot resolve: the text as typed is the path
            raw = str(OmegaConf.select(cfg, key, throw_on_resolution_failure=True))
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{key}={'null' if raw is None else repr(raw)} is not a path; give one, e.g. {key}=" +
                          ("outputs/gpt2ish_mini" if key == "checkpoint" else "prompts.txt"))
    return str(home_expanded(raw)) if raw.startswith("~") else raw  # zsh leaves `key=~/x` to us


def read_prompts(cfg: DictConfig) -> list[str]:
    """prompt (one or a list) then the lines of prompt_file. An empty prompt samples from the start of a document
    (the eot token every prompt begins with), as nanoGPT's sample.py does from its start token."""
    prompts = typed_prompts(cfg)
    if (prompt_file := typed_path(cfg, "prompt_file")) is not None:
        path = Path(prompt_file)
        if path.is_dir() or not path.exists():  # a pipe (/dev/stdin, <(cmd)) is read like a file
            raise ConfigError(f"prompt_file={path} " + ("is a directory; give a file, one prompt per line"
                                                       if path.is_dir() else "does not exist"))
        try:
            text = path.read_text(encoding="utf-8-sig")  # Notepad's UTF-8 starts with a byte-order mark
            lines = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]  # not splitlines():
            # it also splits at U+2028, form feeds and other characters inside a line
        except UnicodeDecodeError as e:
            raise ConfigError(f"prompt_file={path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not lines:
            raise ConfigError(f"prompt_file={path} holds no prompt (one per line)")
        prompts += lines
    if not prompts:
        raise ConfigError('no prompt: give prompt="Once upon a time" (or prompt_file=FILE, one prompt per line; '
                          'prompt="" samples from the start of a document)')
    return prompts


def settings(cfg: DictConfig) -> GenerationConfig:
    """The generation settings, checked before any model is loaded."""
    config = GenerationConfig(**{f.name: cfg[f.name] for f in dataclasses.fields(GenerationConfig)})
    for key in ("num_samples", "batch_size"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r} must be an integer >= 1")
    check_amp_dtype(cfg.amp_dtype)
    return config


_streamed = [""]  # the last text written: an error after a streamed prompt starts on a line of its own


def write(text: str) -> None:
    """`text` to stdout, a byte typed that is not UTF-8 (argv holds it as a surrogate, which the bytes tokenizer
    reads as the byte) shown as U+FFFD, and what the terminal's encoding lacks as `?`: a strict stdout refused
    to print them back."""
    encoding = sys.stdout.encoding or "utf-8"
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    sys.stdout.write(text.encode(encoding, "replace").decode(encoding))
    sys.stdout.flush()
    _streamed[0] = text or _streamed[0]


def generate(cfg: DictConfig) -> list[str]:
    """Print each prompt with its continuation; one continuation streams as it is generated."""
    reject_added_keys(cfg, "generate")
    check_value_types(cfg, "generate", nullable={"seed": int, "top_k": int, "load_as": str})
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("no checkpoint: give checkpoint=PATH.lmp (a run's model.lmp, or one made by "
                          "`python -m experiments.gpt2.import_hf`)")
    typed = typed_path(cfg, "checkpoint")
    path = checkpoint_file(typed)  # a run dir stands for its model.lmp
    if not path.is_file():
        raise no_checkpoint(typed)
    config = settings(cfg)
    prompts = read_prompts(cfg)

    import torch  # after the cheap checks: a mistake is reported without waiting for torch

    from lmplay.generation.loading import load_model
    from lmplay.generation.text import encode_prompts, generate_text, notice
    from lmplay.model import all_finite

    device, dtype = pick_device(cfg.device), amp_dtype(cfg.amp_dtype, cfg.amp)
    model, exp = load_model(path, device, cfg.load_as)
    if not all_finite(model.parameters()):
        raise ConfigError(f"checkpoint {path} has weights that are not finite (NaN or inf: a diverged run?); "
                          f"sample from an earlier checkpoint")
    print(f"{path}: experiment {printable(exp)}, {model.size_text()}, tokenizer "
          f"{model.tokenizer_name}, context {model.context_len}, device {device}", file=sys.stderr)
    generator = torch.Generator(device)
    if cfg.seed is None:
        generator.seed()
    else:
        generator.manual_seed(cfg.seed)
    typed = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)  # a prompt's ${HOME} stays text
    typed_keys = [override_key(o) for o in typed]
    for note in (config.unread(typed_keys), unused_amp_dtype(typed_keys, cfg.amp_dtype, cfg.amp)):
        if note is not None:
            notice(note)
    if cfg.num_samples > 1 and (config.greedy or config.top_k == 1):
        why = "do_sample=false" if not cfg.do_sample else "temperature=0" if config.greedy else "top_k=1"
        notice(f"num_samples={cfg.num_samples} with greedy decoding ({why}) gives that many identical "
               f"continuations; do_sample=true with a temperature > 0 and top_k > 1 draws different ones")
    # a prompt cut to the context is noticed here, once, by its number in the list; batches would number their rows
    encode_prompts(model.tokenizer, prompts, model.context_len)
    unsaid = functools.partial(generate_text, notify=lambda _said: None)
    rows = [p for p in prompts for _ in range(cfg.num_samples)]
    if len(rows) == 1:
        write(rows[0])
        outputs = unsaid(model, rows, config, generator=generator, stream=write, amp_dtype=dtype)
        write("\n")
        return outputs
    outputs = []
    for start in range(0, len(rows), cfg.batch_size):  # each batch printed as it ends: a long file shows progress
        batch = rows[start:start + cfg.batch_size]
        with out_of_memory_said(len(batch)):
            outputs += unsaid(model, batch, config, generator=generator, amp_dtype=dtype)
        for i in range(start, start + len(batch)):
            sample = f", sample {i % cfg.num_samples + 1} of {cfg.num_samples}" if cfg.num_samples > 1 else ""
            write(f"----- prompt {i // cfg.num_samples + 1} of {len(prompts)}{sample} -----\n{rows[i]}{outputs[i]}\n")
    return outputs


@contextlib.contextmanager
def out_of_memory_said(rows: int) -> Iterator[None]:
    """Running out of memory while generating a batch is one line that says what to lower."""
    import torch

    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and "allocate" not in str(e):
            raise
        raise ConfigError(f"out of memory generating {rows} rows at once (each holds a KV cache and logits as long "
                          f"as the context); use a smaller batch_size=N") from None


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="generate")
def main(cfg: DictConfig) -> list[str]:
    try:
        with reader_may_stop(), readable_config():  # inside the job: Hydra reports what a job raises as a traceback
            return generate(cfg)
    except LmplayError as e:
        end_streamed_line()
        report(e)
    except KeyboardInterrupt:
        end_streamed_line()
        fail("interrupted", 130)


def end_streamed_line() -> None:
    """An error after streamed text starts on a line of its own."""
    if _streamed[0] and not _streamed[0].endswith("\n"):
        write("\n")


def cli() -> None:
    argv = normalize(translate_flags(sys.argv[1:], SEED_FLAGS, SEED_SWITCHES, "generate"))
    if is_sweep(argv):  # each job's text would print unlabelled, and a multirun/
        fail("generate takes no -m: it prints, and writes no run dirs; run it once per setting (num_samples=N "
             "samples a prompt N times)")  # dir be left behind
    if run_dir := next((a for a in argv if override_key(a) == "hydra.run.dir"), None):  # Hydra would make it, empty
        fail(f"{run_dir}: generate prints its text and writes no run dir; drop hydra.run.dir (to keep the text: "
             f"python -m lmplay.generate ... > FILE)")
    if (subdir := next((a for a in argv if override_key(a) == "hydra.output_subdir"), None)) and \
            override_value([subdir], "hydra.output_subdir") not in (None, "null"):  # written into the current dir,
        fail(f"{subdir}: generate writes no .hydra/ (it would be written into the current directory, over a run "
             f"dir's own when run from inside one); drop hydra.output_subdir")  # its labels for plots and sweeps
    run_hydra_app(main, argv, "generate")


if __name__ == "__main__":
    cli()
