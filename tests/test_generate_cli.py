"""`python -m lmplay.generate` as a user runs it: prompts in every form, streaming, and one-line errors."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_config, python_path, run_cli

from experiments.gpt2ish.model import GPT2ish
from lmplay.errors import ConfigError
from lmplay.generation.command_line import normalize
from lmplay.generation.loading import save_model
from lmplay.runner import checkpoint


@pytest.fixture(scope="module")
def model_and_path(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT2ish(vocab_size=257, context_len=64, num_blocks=2, embed_dim=32, num_heads=2, tokenizer="bytes")
    return model.eval(), save_model(model, "test_runner", tmp_path_factory.mktemp("ckpt") / "model.lmp")


def generate(*args: str, cwd: Path | None = None):
    return run_cli("lmplay.generate", *args, cwd=cwd, timeout=120)


def test_greedy_output_is_the_prompt_and_the_models_continuation(model_and_path, tmp_path):
    model, path = model_and_path
    prompt = "Once upon a time, it's said = 'x'"
    proc = generate(f"checkpoint={path}", f"prompt={prompt}", "do_sample=false", "max_new_tokens=30",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = model.generate_prompts([prompt], max_new_tokens=30)[0]
    assert proc.stdout == prompt + expected + "\n"
    assert "experiment test_runner" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no run dir, no .hydra, no log file


@pytest.mark.parametrize("prompt", ["", "\n"])
def test_an_empty_or_blank_prompt_samples_from_the_start_of_a_document(model_and_path, prompt):
    """nanoGPT's sample.py starts from "\n" by default; an empty prompt is the eot token alone. Both were refused."""
    model, path = model_and_path
    proc = generate(f"checkpoint={path}", f"prompt={prompt}", "do_sample=false", "max_new_tokens=12")
    assert proc.returncode == 0, proc.stderr
    continuation = model.generate_prompts([prompt], max_new_tokens=12)[0]
    assert len(continuation) > 0 and proc.stdout == prompt + continuation + "\n"


def test_seed_flags_and_a_bare_prompt(model_and_path):
    _, path = model_and_path
    proc = generate("--model", str(path), "A bare prompt", "--prompt", "a flag prompt", "--max-len", "5",
                    "--num-samples", "2")
    assert proc.returncode == 0, proc.stderr
    headers = [line for line in proc.stdout.splitlines() if line.startswith("-----")]
    assert headers == ["----- prompt 1 of 2, sample 1 of 2 -----", "----- prompt 1 of 2, sample 2 of 2 -----",
                       "----- prompt 2 of 2, sample 1 of 2 -----", "----- prompt 2 of 2, sample 2 of 2 -----"]
    assert "\nA bare prompt" in proc.stdout and "\na flag prompt" in proc.stdout
    model = model_and_path[0]
    greedy = generate("--model", str(path), "--greedy", "--prompt", "To", "--max-len", "5", "--seed", "3")
    assert greedy.stdout == "To" + model.generate_prompts(["To"], max_new_tokens=5)[0] + "\n", greedy.stderr


def test_prompts_from_a_pipe(model_and_path):
    """prompt_file=/dev/stdin (or <(cmd)) was refused as a file that does not exist."""
    proc = subprocess.run([sys.executable, "-m", "lmplay.generate", f"checkpoint={model_and_path[1]}",
                           "prompt_file=/dev/stdin", "max_new_tokens=2"], input="ROMEO:\nJULIET:\n", text=True,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": python_path()}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "----- prompt 1 of 2 -----\nROMEO:" in proc.stdout and "----- prompt 2 of 2 -----\nJULIET:" in proc.stdout


def test_prompt_list_and_prompt_file(model_and_path, tmp_path):
    _, path = model_and_path
    prompts = tmp_path / "prompts.txt"
    # Notepad's byte-order mark, a Windows line end, and U+2028 inside a line (which splitlines() splits at)
    prompts.write_bytes("\ufefffrom the file\r\n\nsecond line, with a comma \u2028 and a separator\n".encode())
    proc = generate(f"checkpoint={path}", "prompt=[one,'two, three']", f"prompt_file={prompts}",
                    "max_new_tokens=4", "seed=3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("----- prompt ") == 4 and "\ufeff" not in proc.stdout
    positions = [proc.stdout.index(f"\n{text}") for text in
                 ("one", "two, three", "from the file", "second line, with a comma \u2028 and a separator")]
    assert positions == sorted(positions)  # the file's prompts after the prompt= ones, each in its order


def test_a_long_prompt_is_cut_with_a_notice_and_generation_goes_past_the_context(model_and_path):
    _, path = model_and_path
    proc = generate(f"checkpoint={path}", "prompt=" + "long prompt " * 10, "max_new_tokens=100", "use_cache=true")
    assert proc.returncode == 0, proc.stderr
    assert "notice: prompt 1 has 120 tokens, more than the context (64); using its last 64" in proc.stderr
    proc = generate(f"checkpoint={path}", "prompt=[a,b," + "long prompt " * 10 + "]", "num_samples=2", "batch_size=3",
                    "max_new_tokens=2")
    notices = [line for line in proc.stderr.splitlines() if line.startswith("notice: prompt")]
    assert notices == ["notice: prompt 3 has 119 tokens, more than the context (64); using its last 64"]  # was 5, 6


def test_command_line_forms_become_safe_overrides():
    assert normalize(["prompt=It's late, Bob", "top_k=5"]) == ["prompt='It\\'s late, Bob'", "top_k=5"]
    assert normalize(["prompt='already quoted'"]) == ["prompt='already quoted'"]
    assert normalize(["Once upon a time", "prompt=[a,b]"]) == ["prompt=['Once upon a time','a','b']"]
    assert normalize(["prompt=[a\\,b, c]"]) == ["prompt=['a,b','c']"]  # Hydra's escaped comma is the prompt's
    assert normalize(["prompt=[a, ]"]) == ["prompt=[a, ]"]  # left for Hydra to refuse, not an empty prompt
    assert normalize(["--cfg", "job", "checkpoint=my model, v2.lmp"]) == ["--cfg", "job",
                                                                          "checkpoint='my model, v2.lmp'"]
    # a bare word holding `=` is a prompt unless it starts with a name (a setting, or a typo: an error)
    assert normalize(["x = 1 + 2", "1+1=2", "seed=3", "max_length=5", "hydra/job_logging=disabled"]) == [
        "prompt=['x = 1 + 2','1+1=2']", "seed=3", "max_length=5", "hydra/job_logging=disabled"]
    assert normalize(["hi", "--cfg", "job"]) == ["prompt=hi", "--cfg", "job"]  # Hydra's overrides come first


def foreign_files(tmp_path: Path) -> dict[str, Path]:
    not_lmplay = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, not_lmplay)
    text = tmp_path / "notes.lmp"
    text.write_text("not a checkpoint")
    model = GPT2ish(vocab_size=257, context_len=8, num_blocks=1, embed_dim=8, num_heads=1, tokenizer="bytes")
    diverged = altered(GPT2ish(vocab_size=257, context_len=8, num_blocks=1, embed_dim=8, num_heads=1,
                               tokenizer="bytes"), tmp_path / "diverged.lmp")
    ckpt = checkpoint.load(diverged)  # as a diverged run's would be, had it been saved (save_model refuses it)
    ckpt["components"]["model"]["state"]["weights"]["lm_head.weight"].fill_(float("nan"))
    checkpoint.save({k: v for k, v in ckpt.items() if k != "format_version"}, diverged)
    return {"foreign": not_lmplay, "text": text, "unknown_exp": altered(model, tmp_path / "other.lmp",
                                                                      exp="no_such_experiment"),
            "diverged": diverged,
            "heads": altered(model, tmp_path / "heads.lmp", num_heads=3),  # the code refuses: 8 is not 3 heads
            "huge": altered(model, tmp_path / "huge.lmp", embed_dim=10**7),  # would allocate terabytes
            "gpt3": altered(model, tmp_path / "gpt3.lmp", tokenizer="gpt3"),  # read as if typed on the command line
            "sweep": sweep_of_two(tmp_path / "sweep", model), "dir_named_lmp": dir_named_lmp(tmp_path / "run")}


def dir_named_lmp(run: Path) -> Path:
    (run / "model.lmp").mkdir(parents=True)
    return run


def sweep_of_two(sweep: Path, model: torch.nn.Module) -> Path:
    for job in ("0_seed=1", "1_seed=2"):
        save_model(model, "test_runner", sweep / job / "model.lmp")
    (sweep / "only_bak").mkdir()  # what a crash in a save's rename leaves
    (sweep / "0_seed=1" / "model.lmp").rename(sweep / "only_bak" / "model.lmp.bak")
    save_model(model, "test_runner", sweep / "0_seed=1" / "model.lmp")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def altered(model: torch.nn.Module, path: Path, exp: str = "test_runner", **state_args) -> Path:
    """A checkpoint of `model` whose experiment or stored arguments were edited: damaged, or an older version's."""
    save_model(model, "test_runner", path)
    ckpt = checkpoint.load(path)
    ckpt["exp"] = exp
    ckpt["components"]["model"]["state_args"].update(state_args)
    checkpoint.save({k: v for k, v in ckpt.items() if k != "format_version"}, path)
    return path


@pytest.mark.parametrize("args, message", [
    (["checkpoint=missing.lmp", "prompt=hi"], "error: checkpoint missing.lmp does not exist"),
    (["checkpoint={dir_named_lmp}", "prompt=hi"], "model.lmp is a directory, not a checkpoint file"),  # "does not
    # exist", of a path that does
    (["checkpoint=/dev/null", "prompt=hi"], "checkpoint /dev/null is no regular file; give a model.lmp"),  # the same
    (["checkpoint={foreign}", "prompt=hi"], "is not an lmplay checkpoint"),
    (["checkpoint={text}", "prompt=hi"], "notes.lmp"),
    (["checkpoint={unknown_exp}", "prompt=hi"], "experiment 'no_such_experiment' is not registered"),
    (["checkpoint={unknown_exp}", "prompt=hi"], "made with `python -m lmplay.new_exp NAME --into DIR`, run `pip install"),
    (["checkpoint={model}", "prompt_file=/"], "prompt_file=/ is a directory; give a file, one prompt per line"),
    (["checkpoint={model}", "prompt=hi", "temperature=-1"], "error: temperature=-1 must be >= 0"),
    (["checkpoint={model}", "prompt=hi", "~seed"], "~seed would delete generate's setting seed"),  # was sampled
    (["checkpoint={model}", "prompt=hi", "~seed=1337"], "~seed=1337 would delete generate's setting seed"),
    (["checkpoint={model}", "prompt=hi", "~checkpoint"], "~checkpoint would delete generate's setting checkpoint"),
    (["checkpoint={model}", "prompt=hi", "top_p=0"], "error: top_p=0 must be in (0, 1]"),
    (["checkpoint={model}", "prompt=hi", "top_p=1.5"], "error: top_p=1.5 must be in (0, 1]"),
    (["checkpoint={model}", "prompt=hi", "top_k=0"], "error: top_k=0 must be >= 1"),
    (["checkpoint={model}", "prompt=hi", "temperature=nan"], "error: temperature=nan should be a finite number"),
    (["checkpoint={model}", "prompt=hi", "repetition_penalty=inf"], "repetition_penalty=inf should be a finite"),
    (["checkpoint={diverged}", "prompt=hi"], "has weights that are not finite (NaN or inf: a diverged run?)"),
    (["checkpoint={heads}", "prompt=hi"], "does not fit the installed code of experiment 'test_runner' (ValueError"),
    (["checkpoint={huge}", "prompt=hi"], "do not fit its arguments (embed.tok.weight [257, 8] for [257, 10000000]"),
    (["checkpoint={gpt3}", "prompt=hi"], "holds model settings the installed code refuses: tokenizer='gpt3' is unknown"),
    (["checkpoint={model}", "prompt=hi", "amp=maybe"], "error: amp='maybe' should be true or false"),
    (["checkpoint={model}", "prompt=[it's,b]"], "error: prompt=[it's,b]: Hydra cannot read this value (LexerNoViable"),
    (["checkpoint={model}", "prompt=hi", "num_samples=1.5"], "error: num_samples=1.5 should be an integer"),
    (["checkpoint={model}", "prompt=hi", "batch_size=0"], "error: batch_size=0 must be an integer >= 1"),
    (["checkpoint={model}", "prompt=hi", "seed=99999999999999999999"], "seed=99999999999999999999 is out of torch's"),
    (["checkpoint={model}"], "error: no prompt"),
    (["checkpoint={sweep}", "prompt=hi"], "is a sweep's dir, of 2 runs: give one of their checkpoints, e.g. "),
    (["checkpoint={sweep}/model.lmp", "prompt=hi"], "/0_seed=1/model.lmp"),  # was only: ... does not exist
    (["checkpoint={sweep}/9_seed=9/model.lmp", "prompt=hi"], "/0_seed=1/model.lmp"),  # a job's name mistyped
    (["checkpoint={sweep}/only_bak", "prompt=hi"], ("model.lmp does not exist, but model.lmp.bak does: the previous "
                                                    "checkpoint (rename it to model.lmp to use it)")),
    (["prompt=hi"], "error: no checkpoint"),
    (["checkpoint=null", "prompt=hi"], "error: checkpoint=null is not a path; give one"),  # were Hydra tracebacks
    (["checkpoint=[a,b]", "prompt=hi"], "error: checkpoint=['a', 'b'] is not a path"),
    (["checkpoint=", "prompt=hi"], "error: checkpoint='' is not a path"),  # was ./model.lmp, silently
    (["checkpoint={model}", "prompt=hi", "prompt_file=[a,b]"], "error: prompt_file=['a', 'b'] is not a path"),
    (["checkpoint=d${{HOME}}", "prompt=hi"], "error: checkpoint d${HOME} does not exist"),
    (["checkpoint={model}", "prompt=hi", "+tempreture=0.5"], "unknown key 'tempreture' (did you mean temperature?)"),
    (["checkpoint={model}", "E=mc^2"], "unknown key 'E'; see `--cfg job` for every key; a prompt that holds '=' is typed"),
    (["checkpoint={model}", "max_length=20"], "unknown key 'max_length' (did you mean max_new_tokens?)"),  # not prompts
    (["checkpoint={model}", "prompt=hi", "temp=0.5"], "unknown key 'temp' (did you mean temperature?)"),
    (["checkpoint={model}", "prompt=hi", "top-k=5"], "unknown key 'top-k' (did you mean top_k?)"),
])
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(model_and_path, tmp_path, args, message):
    files = {**foreign_files(tmp_path), "model": model_and_path[1]}
    proc = generate(*(a.format(**files) for a in args))
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr


@pytest.mark.parametrize("typed", ["In bash, echo ${HOME} prints it", "${oc.env:HOME}", "1e3", "3.10", "true",
                                   "C:\\Users\\x", "it's \\'quoted\\' \\", "it costs ${5", "${a ${b}",
                                   "Café", "Привет", "½", '"Hi," she said. "Bye"', "'x' and 'y'"])  # Hydra's errors
def test_a_prompt_is_the_text_as_typed(model_and_path, typed):
    """Neither a config expression (resolved, or an error) nor a number (1e3 -> 1000.0)."""
    proc = generate(f"checkpoint={model_and_path[1]}", f"prompt={typed}", "max_new_tokens=0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == typed


def test_a_prompt_holding_bytes_that_are_not_utf8_is_printed_back(model_and_path):
    """A UTF-8 locale's stdout refused the surrogate argv holds for the byte: a traceback after the model loaded."""
    for prompt in ("caf\udce9", "[caf\udce9,b]"):  # the byte 0xe9, as Python hands it over from argv
        proc = run_cli("lmplay.generate", f"checkpoint={model_and_path[1]}", f"prompt={prompt}", "max_new_tokens=2",
                       env={"PYTHONIOENCODING": "utf-8"})
        assert proc.returncode == 0 and "caf\ufffd" in proc.stdout, proc.stderr
    latin = run_cli("lmplay.generate", f"checkpoint={model_and_path[1]}", "prompt=caf\udce9 \u20ac",
                    "max_new_tokens=2", env={"PYTHONIOENCODING": "latin-1"})  # no U+FFFD, no euro sign there
    assert latin.returncode == 0 and latin.stdout.startswith("caf? ?"), latin.stderr


def test_each_prompt_of_a_list_is_its_text_as_typed(model_and_path):
    """`[1e3,true]` gave the prompts 1000.0 and True: Hydra reads an unquoted list item as a number or a bool."""
    proc = generate(f"checkpoint={model_and_path[1]}", "prompt=[1e3, true,'x, y',${HOME}]", "max_new_tokens=0")
    assert proc.returncode == 0, proc.stderr
    texts = [line for line in proc.stdout.splitlines() if line and not line.startswith("-----")]
    assert texts == ["1e3", "true", "x, y", "${HOME}"]


def test_generate_refuses_a_sweep_a_nested_prompt_list_and_reads_a_checkpoint_under_home(model_and_path, tmp_path):
    _, path = model_and_path
    swept = generate("-m", f"checkpoint={path}", "prompt=x", "seed=1,2", cwd=tmp_path)
    assert swept.returncode == 2 and "generate takes no -m" in swept.stderr  # the texts printed unlabelled
    assert not (tmp_path / "multirun").exists()
    swept = generate("hydra.mode=MULTIRUN", f"checkpoint={path}", "prompt=x", "temperature=0.5,1.0", cwd=tmp_path)
    assert swept.returncode == 2 and "generate takes no -m" in swept.stderr  # -m by another name ran two jobs
    assert not (tmp_path / "multirun").exists()
    into = generate(f"checkpoint={path}", "prompt=x", "max_new_tokens=0", f"hydra.run.dir={tmp_path / 'x'}")
    assert into.returncode == 2 and "generate prints its text and writes no run dir" in into.stderr
    assert not (tmp_path / "x").exists()  # made, and left empty
    for subdir in ("hydra.output_subdir=.hydra", "++hydra.output_subdir=cfg"):  # from inside a run dir, Hydra wrote
        kept = generate(f"checkpoint={path}", "prompt=x", "max_new_tokens=0", subdir, cwd=tmp_path)  # over its .hydra/
        assert kept.returncode == 2 and "generate writes no .hydra/" in kept.stderr, kept.stderr
        assert not (tmp_path / ".hydra").exists() and not (tmp_path / "cfg").exists()
    nested = generate(f"checkpoint={path}", "prompt=[a,[b]]", "max_new_tokens=0")
    assert nested.returncode == 2 and "prompt item ['b'] is a list or mapping, not a prompt" in nested.stderr
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    (home / "runs" / "model.lmp").write_bytes(path.read_bytes())
    for typed in ("checkpoint=~/runs/model.lmp", "checkpoint=~/runs"):  # zsh does not expand `key=~/x`
        proc = run_cli("lmplay.generate", typed, "prompt=hi", "max_new_tokens=0", env={"HOME": str(home)})
        assert proc.returncode == 0 and proc.stdout.strip() == "hi", proc.stderr


def test_bare_prompt_words_holding_an_unclosed_interpolation_are_their_text(model_and_path):
    """`${` never closed was Hydra's parse error ("mismatched input '<EOF>'") for a bare prompt word."""
    proc = generate(f"checkpoint={model_and_path[1]}", "it costs ${5", "and ${b", "max_new_tokens=0")
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line and not line.startswith("-----")] == \
        ["it costs ${5", "and ${b"]


@pytest.mark.parametrize("command,reader", [("lmplay.generate checkpoint={path} prompt=To max_new_tokens=2000",
                                             "head -c 1"), ("lmplay.inspect {path}", "head -c 1"),
                                            ("lmplay.generate --help", "true"), ("lmplay.train --help", "true")])
def test_a_reader_that_stops_early_gets_no_traceback(model_and_path, command, reader):
    """`true` reads nothing: its pipe is closed before the command writes (Hydra's --help was a traceback)."""
    env = {**os.environ, "PYTHONPATH": python_path()}
    proc = subprocess.run(f"{sys.executable} -m {command.format(path=model_and_path[1])} | {reader}", shell=True,
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_ctrl_c_during_a_streamed_continuation_says_so_on_a_line_of_its_own(model_and_path):
    env = {**os.environ, "PYTHONPATH": python_path()}
    proc = subprocess.Popen([sys.executable, "-m", "lmplay.generate", f"checkpoint={model_and_path[1]}", "prompt=To",
                             "max_new_tokens=1000000", "stop_at_eot=false"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO, env=env)
    streamed = proc.stdout.read(8)  # the prompt and a few generated characters: it is streaming
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and len(streamed) == 8
    assert (streamed + out).endswith(b"\n") and err.decode().endswith("error: interrupted\n")


def test_a_run_dir_stands_for_its_model_lmp(model_and_path):
    model, path = model_and_path
    proc = generate(f"checkpoint={path.parent}", "prompt=To", "do_sample=false", "max_new_tokens=5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "To" + model.generate_prompts(["To"], max_new_tokens=5)[0] + "\n"
    shown = run_cli("lmplay.inspect", str(path.parent), check=True).stdout
    assert "experiment   test_runner" in shown and f"checkpoint   {path} (format" in shown  # the file it read


def test_prompts_run_in_batches_each_printed_as_it_ends_and_running_out_of_memory_is_one_line(
        model_and_path, monkeypatch, capsys):
    """All rows ran as one batch, sized in advance: a long prompt file ran out of memory with a traceback, and
    nothing was printed before every row was done. Here the third batch of two runs out of memory."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from lmplay.errors import ConfigError
    from lmplay.generate import generate as generate_in_process
    from lmplay.generation import text

    path = model_and_path[1]
    greedy = ["checkpoint=" + str(path), "do_sample=false", "max_new_tokens=3", "device=cpu"]
    prompts = [f"p{i}" for i in range(6)]
    batched = generate(*greedy, f"prompt=[{','.join(prompts)}]", "batch_size=2")
    assert batched.returncode == 0, batched.stderr
    assert batched.stdout == generate(*greedy, f"prompt=[{','.join(prompts)}]").stdout  # greedy: as one batch
    cfg = compose_config([*greedy, f"prompt=[{','.join(prompts)}]", "batch_size=2"], "generate")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    calls = []

    def third_runs_out(model, rows, *args, **kwargs):
        calls.append(list(rows))
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 75.00 MiB")
        return ["!" for _ in rows]

    monkeypatch.setattr(text, "generate_text", third_runs_out)
    with pytest.raises(ConfigError, match=r"^out of memory generating 2 rows at once .* use a smaller batch_size=N$"):
        generate_in_process(cfg)
    assert calls == [prompts[0:2], prompts[2:4], prompts[4:6]]
    assert capsys.readouterr().out == "".join(f"----- prompt {i + 1} of 6 -----\np{i}!\n" for i in range(4))


def test_greedy_samples_of_one_prompt_are_said_to_be_identical(model_and_path):
    proc = generate(f"checkpoint={model_and_path[1]}", "prompt=hi", "num_samples=2", "do_sample=false",
                    "max_new_tokens=3")
    assert proc.returncode == 0 and proc.stdout.count("----- prompt ") == 2
    assert "notice: num_samples=2 with greedy decoding (do_sample=false) gives that many identical" in proc.stderr
    proc = generate(f"checkpoint={model_and_path[1]}", "prompt=hi", "num_samples=2", "do_sample=true", "temperature=0",
                    "max_new_tokens=3")  # greedy too (the config's own comment says so), and was said nothing of
    assert "notice: num_samples=2 with greedy decoding (temperature=0) gives that many identical" in proc.stderr


def test_sampling_settings_typed_beside_do_sample_false_are_said_to_do_nothing(model_and_path):
    """HF's generate warns of this; lmplay printed the greedy text and nothing else. So with amp_dtype beside
    amp=false, which ran in fp32."""
    proc = generate(f"checkpoint={model_and_path[1]}", "prompt=hi", "do_sample=false", "temperature=0.5", "top_k=3",
                    "max_new_tokens=3", "amp_dtype=fp16")
    assert proc.returncode == 0
    assert "notice: do_sample=false decodes greedily, so temperature, top_k have no effect; do_sample=true samples " \
           "with them" in proc.stderr
    assert ("notice: amp_dtype=fp16 changes nothing: amp=false runs in full precision (fp32); add amp=true for "
            "fp16") in proc.stderr
    proc = generate(f"checkpoint={model_and_path[1]}", "prompt=hi", "do_sample=false", "max_new_tokens=3")
    assert "do_sample=false decodes greedily" not in proc.stderr  # the file's sampling defaults are not typed
    assert "amp_dtype" not in proc.stderr


def test_a_run_of_an_experiment_config_of_ones_own_can_be_sampled(tmp_path):
    """A config of one's own over a registered class (--config-dir DIR, DIR/exp/my_tiny.yaml) trained, but its
    checkpoint could not be sampled: 'experiment my_tiny is not registered'. Its model class is found in the
    registry (never imported from the checkpoint)."""
    (tmp_path / "u" / "exp").mkdir(parents=True)
    (tmp_path / "u" / "exp" / "my_tiny.yaml").write_text(
        "# @package _global_\ndefaults:\n  - test_runner\nmodel:\n  num_blocks: 1\n")
    run = tmp_path / "run"
    run_cli("lmplay.train", "--config-dir", str(tmp_path / "u"), "exp=my_tiny", "max_steps=2", "device=cpu",
            f"hydra.run.dir={run}", cwd=tmp_path, check=True)
    proc = generate(f"checkpoint={run}", "prompt=ROMEO:", "max_new_tokens=3")
    assert proc.returncode == 0, proc.stderr
    assert "experiment my_tiny" in proc.stderr and proc.stdout.startswith("ROMEO:")
    proc = run_cli("lmplay.train", "exp=test_runner", "exp_name=other", f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 2 and "exp_name is the name of the exp= config the run uses" in proc.stderr


def test_sampling_a_run_that_has_not_saved_yet_says_it_is_still_training(tmp_path):
    """It said "checkpoint .../model.lmp does not exist", which reads as a typo in the path."""
    run = tmp_path / "run"
    run.mkdir()
    hold = f"from lmplay.files import hold_run_dir; from pathlib import Path; hold_run_dir(Path({str(run)!r})); " \
           f"print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": python_path()})
    try:
        assert holder.stdout.readline() == "held\n"
        proc = run_cli("lmplay.generate", f"checkpoint={run}", "prompt=hi", cwd=tmp_path)
    finally:
        holder.communicate("\n")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: checkpoint {run / 'model.lmp'} does not exist yet: the run in {run} is still training and has not "
        f"saved (it saves every runner.save_interval samples, at each stage's end and at its own); sample once it has")
    proc = run_cli("lmplay.generate", f"checkpoint={run}", "prompt=hi", cwd=tmp_path)  # no run holds it now
    assert proc.stderr.strip() == f"error: checkpoint {run / 'model.lmp'} does not exist"


def test_hugging_face_weights_given_as_a_checkpoint_say_how_to_import_them(tmp_path: Path):
    """A GPT-2's model.safetensors or pytorch_model.bin given to generate: the import is the way, not only a refusal."""
    weights = tmp_path / "pytorch_model.bin"
    torch.save({"transformer.wte.weight": torch.zeros(4, 2)}, weights)
    with pytest.raises(ConfigError, match=r"is not an lmplay checkpoint but weights alone .*"
                                          r"python -m experiments\.gpt2\.import_hf .*pytorch_model\.bin OUT\.lmp"):
        checkpoint.load(weights)
    proc = run_cli("lmplay.generate", f"checkpoint={tmp_path}", "prompt=hi")  # a save_pretrained folder
    assert proc.stderr.strip() == (f"error: checkpoint {tmp_path / 'model.lmp'} does not exist: {tmp_path} holds a "
                                   f"Hugging Face model's weights (save_pretrained's), which import into one: "
                                   f"python -m experiments.gpt2.import_hf {tmp_path} OUT.lmp")
