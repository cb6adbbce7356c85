"""What lmplay's commands share: the seed's flag forms, Hydra's own flags, and errors as one line and an exit code."""

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from lmplay.errors import LmplayError


def translate_flags(argv: Sequence[str], flags: dict[str, str], switches: dict[str, str],
                    config_name: str) -> list[str]:
    """Turn the original's `--batch-size 50` / `--amp` forms into Hydra overrides (`batch_size=50`, `amp=true`):
    `flags` name the key that takes the next word, `switches` the override a bare flag stands for; an unknown
    flag is told as the key of conf/<config_name>.yaml it is closest to."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--" and "--prompt" in flags:  # the end of flags: the words after it are prompts (like -5)
            out.extend(f"{flags['--prompt']}={quote(word, always=True)}" for word in args)
            break
        name, has_value, inline = arg.partition("=")
        if name in switches:
            out.append(switched(name, switches[name], inline if has_value else None))
        elif name in flags:
            if not inline and not args:
                fail(f"{name} needs a value")
            value = inline or args.pop(0)
            out.append(f"{flags[name]}={quote(value)}")
        elif name.startswith("-") and name not in HYDRA_FLAGS:
            key = name.lstrip("-").replace("-", "_")
            if not key.isidentifier():  # -5, -, --: no key's spelling, maybe a prompt
                hint = (f"a prompt that starts with '-' is typed {shell_word('--prompt=' + arg)}"
                        if "--prompt" in flags else "--help lists the settings")
                fail(f"unknown flag {arg}; {hint}")
            value = inline or (args[0] if args and "=" not in args[0] and not args[0].startswith("-") else "VALUE")
            fail(f"unknown flag {name}; settings are key=value overrides, {flag_hint(key, value, config_name)} "
                 f"(--help lists them)")
        else:
            out.append(arg)
    return out


def switched(name: str, override: str, typed: str | None) -> str:
    """The override of a switch flag, `--amp` -> amp=true; typed with a value, `--fresh=false` is fresh=false and
    `--greedy=false` do_sample=true (the value was dropped: --fresh=false started the run over)."""
    if typed is None or typed.lower() == "true":
        return override
    if typed.lower() != "false":
        fail(f"{name}={typed}: a switch is true or false ({name} alone is {override})")
    key, _, value = override.partition("=")
    return f"{key}={'false' if value == 'true' else 'true'}"


ALIASES = {"block_size": "context_len", "n_layer": "model.num_blocks", "n_head": "model.num_heads",
           "n_embd": "model.embed_dim", "learning_rate": "lr", "max_iters": "max_steps", "dropout": "model.dropout",
           "eval_interval": "runner.validation_interval", "eval_iters": "runner.validation_batches",
           "exp_name": "exp"}  # training's keys by nanoGPT's names (and exp_name, a label, not a setting)
UNLIKE_NANOGPT = {"gradient_accumulation_steps": "batch_size is accumulated in mini-batches of mini_batch_size",
                  "warmup_iters": "warmup is warmup_fraction, of each stage's steps"}
SAMPLE_ALIASES = {"start": "prompt", "out_dir": "checkpoint", "init_from": "checkpoint"}  # nanoGPT's sample.py
RANK_0_FIRST_S = 15  # how long torchrun's other ranks give rank 0 to say an error they all met
# nanoGPT's --dtype (train.py and sample.py)
DTYPE = "nanoGPT's bfloat16 or float16 is amp=true amp_dtype=bf16 or fp16 here, its float32 amp=false"


def flag_hint(key: str, value: str, config_name: str) -> str:
    """`--top-k 5`: like top_k=5; `--temp 0.5`, `--embed-dim 64`, `--block-size 256`: the key it stands for
    (temperature, model.embed_dim, context_len), never a respelling that is refused in turn."""
    from lmplay.overrides import closest_key, every_key

    def setting(name: str) -> str:  # as it pastes back: one word for bash, and one value for Hydra (`a b,c`)
        return shell_word(f"{name}={value if value == 'VALUE' else quote(value)}")

    known = [k for k in every_key(config_name) if k not in ALIASES]
    if key in known:
        return f"like {setting(key)}"
    if key == "dtype":  # nanoGPT's spelling; amp_dtype=bfloat16 would be refused in turn
        return f"and dtype is none of them: {DTYPE}"
    if config_name == "config" and key in UNLIKE_NANOGPT:
        return f"and {key} is none of them: {UNLIKE_NANOGPT[key]}"
    if config_name == "generate" and ALIASES.get(key, "").startswith(("context_len", "model.")):
        return f"and {key} is none of them: the model's {ALIASES[key]} is the checkpoint's"
    close = (ALIASES if config_name == "config" else SAMPLE_ALIASES).get(key)
    close = close or closest_key(key, known)
    return f"did you mean {setting(close)}?" if close else f"and {key} is none of them"


HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}  # each takes the next word
HYDRA_FLAGS = HYDRA_VALUE_FLAGS | {"-h", "--help", "--hydra-help", "--version", "--resolve", "-r", "--run", "-m",
                                   "--multirun", "-sc", "--shell-completion"}


def is_sweep(argv: list[str]) -> bool:
    """-m, or the override that Hydra reads as -m (hydra.mode=MULTIRUN), which got past every check of -m."""
    return bool({"-m", "--multirun"} & set(argv)) or any(
        a.split("=", 1)[0].lstrip("+") == "hydra.mode" and a.split("=", 1)[-1].strip().upper() == "MULTIRUN"
        for a in argv)


def quote(value: str, always: bool = False) -> str:
    """Quote a value for Hydra's override grammar when it holds spaces or special characters (`always`: also
    when Hydra would read it as a number or true/false). Inside quotes Hydra unescapes only backslashes before
    a quote or at the end, so only those are doubled (`C:\\Users` stays); an interpolation never closed (`${5`),
    which Hydra cannot parse, is escaped to the literal that a config read resolves back to `${5`."""
    if not always and value and all(c.isascii() and c.isalnum() or c in "._-/:" for c in value):  # Hydra's grammar
        # reads unquoted ASCII words only: `Café` was its LexerNoViableAltException
        return value
    body = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", value)
    body = re.sub(r"(\\+)$", lambda m: m[1] * 2, body)
    return "'" + re.sub(r"\$\{(?![^{}]*\})", r"\\${", body) + "'"


def printable(text: str) -> str:
    """`text` with its control characters (but newlines and tabs) escaped: a checkpoint's or a job file's strings
    are data from wherever the file came from, and an escape sequence in them would clear the terminal or retitle
    it when printed."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" and c not in "\n\t" else c for c in text)


def shell_word(text: str) -> str:
    """`text` as one word for bash: a suggestion pasted into the shell must reach Hydra as it is shown. As it is
    where bash reads it so; else in double quotes, with what bash reads inside them escaped; in single quotes where
    it holds a `!`, which an interactive bash expands even inside double quotes."""
    if shlex.quote(text) == text:
        return text
    if "!" in text:
        return "'" + text.replace("'", "'\\''") + "'"
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


def tell(text: str) -> None:
    """`text` to stderr, unbuffered and best-effort: from a signal handler (a print could land inside the progress
    bar's own write), and where stderr may be gone (a Ctrl-C that also stopped `| tee`, a closed terminal), which
    must not stop the save that follows."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


class StderrWarnings(logging.StreamHandler):
    """A run's logged warnings (the data's) on stderr as lmplay's own: `warning: ...`. The stream is stderr as it
    is when one comes: Hydra sets a sweep's logging up while lmplay still holds stderr back (hydra_app)."""

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def below_warnings() -> Callable[[logging.LogRecord], bool]:
    """The records a run's stdout shows: its notes; warnings go to stderr (StderrWarnings)."""
    return lambda record: record.levelno < logging.WARNING


def say(text: str) -> None:
    """A progress line on stdout, best-effort: where stdout is gone (a Ctrl-C that also stopped `| tee`, a closed
    terminal) the run must still reach its save; later lines go nowhere (Python's advice for a broken pipe)."""
    try:
        print(text, flush=True)
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def fail(message: str, code: int = 2) -> None:
    """One line and an exit code. Under torchrun rank 0 speaks for the run (every rank read the same command line:
    an 8-GPU node printed each error 8 times); each rank also leaves its line in torchrun's error file, so that an
    error of one rank alone is in torchrun's closing report, beside that rank's number."""
    message = printable(message)
    leave_for_torchrun(f"error: {message}")
    if launcher_rank() == 0:
        print(f"error: {message}", file=sys.stderr)
    elif "TORCHELASTIC_RUN_ID" in os.environ and not in_process_group():
        wait_for_rank_0()
    raise SystemExit(code)


def wait_for_rank_0() -> None:
    """Give rank 0 the time to say an error every rank met before they joined the process group (a bad key): the
    first rank to exit makes torchrun stop the rest, and a rank 1 that got there first (rank 0 slower to start, on
    a loaded machine) left the run with no line. torchrun's SIGTERM once rank 0 has exited, or a Ctrl-C (which
    rank 0 reports), ends the wait quietly as exit code 128 + N, through the rank's clean-up. Once in the group a
    rank does not wait: its error may be its own (out of memory), and rank 0, in a collective, finds it gone."""
    def stopped(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stopped)
    time.sleep(RANK_0_FIRST_S)


def in_process_group() -> bool:
    """Whether this rank joined torch.distributed's process group (never without torch imported)."""
    distributed = sys.modules.get("torch.distributed")
    return distributed is not None and distributed.is_available() and distributed.is_initialized()


def leave_for_torchrun(line: str) -> None:
    """`line` as the error file torchrun's report reads (TORCHELASTIC_ERROR_FILE, set per rank by torchrun)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        record = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
        with contextlib.suppress(OSError):
            Path(path).write_text(json.dumps(record))


def launcher_rank() -> int:
    """This process's rank as its launcher numbers it, known before any process group exists: torchrun's RANK,
    or a task's of a submitit job with several. Only rank 0 speaks for a run and writes its files."""
    if "SUBMITIT_EXECUTOR" in os.environ and "TORCHELASTIC_RUN_ID" not in os.environ:  # the job's own, whatever
        from submitit import JobEnvironment  # a job script exported

        return JobEnvironment().global_rank
    if os.environ.get("WORLD_SIZE", "1") != "1" and os.environ.get("RANK", "").isdigit():  # a RANK alone (a job
        return int(os.environ["RANK"])  # script's `export RANK=$SLURM_PROCID`) launches nothing: it silenced errors
    return 0


def report(error: LmplayError) -> None:
    fail(str(error), error.exit_code)


def run_main(main: Callable[[list[str]], object]) -> None:
    """Run a plain (argparse) CLI's `main(argv)`; an LmplayError becomes one line and its exit code."""
    with reader_may_stop():
        try:
            main(sys.argv[1:])
        except LmplayError as e:
            report(e)


@contextlib.contextmanager
def reader_may_stop() -> Iterator[None]:
    """A reader that stops reading the output (`| head`) ends the command quietly, not with a traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's own flush fails no more
        raise SystemExit(1) from None
