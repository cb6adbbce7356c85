"""`python -m lmplay.train` / `lmp_trainer`: train an experiment through its curriculum, resuming the run dir."""

import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from lmplay.cli import fail, in_process_group, launcher_rank, quote, report, shell_word, tell, translate_flags
from lmplay.config import CONF_DIR, check_value_types, flatten, override_key, override_value
from lmplay.errors import ConfigError, LmplayError
from lmplay.files import (CHECKPOINT, CORRUPTED, FRESH_MARK, JOB_FILE, STATS, backup_of, hold_run_dir,
                          interrupted_set_aside, planted_symlink, release_run_dir, remove_crash_leftovers,
                          started_over_in_this_slurm_job, symlink_refused, write_atomic)
from lmplay.hydra_app import JobError, ctrl_c_in, readable_config, remove_made_dirs, run_hydra_app
from lmplay.overrides import reject_added_keys

if TYPE_CHECKING:  # torch: imported only once the config is known to be good
    from lmplay.runner import LMRunnerBase

SEED_FLAGS = {"--exp": "exp", "--device": "device", "--batch-size": "batch_size",
              "--mini-batch-size": "mini_batch_size", "--lr": "lr", "--run-name": "run_name", "--seed": "seed",
              "--grad-clip": "grad_clip", "--max-steps": "max_steps", "--context-len": "context_len",
              "--num-blocks": "model.num_blocks", "--validation-interval": "runner.validation_interval",
              "--save-interval": "runner.save_interval", "--training-plan": "curriculum"}
SEED_SWITCHES = {"--amp": "amp=true", "--compile": "compile=true", "--compile-model": "compile=true",
                 "--fresh": "fresh=true"}


def overridden_keys() -> set[str]:
    """The keys typed on this command line (`lr=1e-3` -> "lr"); they win over a resumed checkpoint."""
    typed = OmegaConf.to_container(HydraConfig.get().overrides, resolve=False)["task"]  # as typed: a value's
    return {override_key(o) for o in typed}  # ${oc.env:X} is no key, and may be the job's own variable


def run_overrides(previous: list[str], typed: list[str], reset: Iterable[str] = ()) -> list[str]:
    """A resumed run's overrides: the earlier commands' keys this one did not retype, then this one's. Plots
    and sweeps label a run by them, and a resume keeps what the earlier commands set (`lr=3e-3`); a group
    chosen anew (`optimizer=adamw`) drops the earlier group's keys (`optimizer.momentum=0.5`). `max_steps` and
    `fresh` belong to their command alone: a resume without max_steps trains on, and its label must not keep the
    earlier command's `max_steps=12` (identical runs were compared as two configurations). `reset` keys are
    dropped too: the top-level keys a group chosen anew reads (`lr` for `optimizer=adamw`) take its file's values."""
    retyped = {override_key(o) for o in typed} | {"max_steps", "fresh"} | set(reset)

    def replaced(key: str) -> bool:
        return key in retyped or key.split(".", 1)[0] in retyped

    return [o for o in previous if not replaced(override_key(o))] + typed


def save_hydra_config(cfg: DictConfig, run_dir: Path, resumed: bool, reset: Iterable[str] = (),
                      unread: Iterable[str] = (), resumed_at: int | None = None) -> None:
    """Write .hydra/ as Hydra would, but only once the run has started cleanly, and with the config the run trains
    with (a resume's settled one, resolved). `unread` keys, typed but read by nothing (a note said so), are no
    part of what the run is labelled by. A resume at step `resumed_at` that changed what is trained is kept in
    RESUMED_CHANGES: the label names the settings of the run's end, and its curve mixes both."""
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    if resumed and resumed_at is not None:
        note_resumed_changes(out, cfg, resumed_at)
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if override_key(o) not in set(unread)]
    if resumed and (out / "overrides.yaml").is_file():
        overrides = run_overrides(earlier_overrides(out / "overrides.yaml"), overrides, reset)
    # atomic: a crash or a full disk mid-write must not leave a torn file that drops the run's label
    write_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg))
    write_atomic(out / "hydra.yaml", OmegaConf.to_yaml({"hydra": OmegaConf.to_container(hydra_cfg,
                                                                                        resolve=False)}))
    write_atomic(out / "overrides.yaml", OmegaConf.to_yaml(overrides))


def note_resumed_changes(out: Path, cfg: DictConfig, step: int) -> None:
    """Append to RESUMED_CHANGES the trained settings this resume changed (`optimizer.lr: [0.003, 0.001]`), read
    from the run's label before it is replaced: a seed resumed at another lr was averaged with seeds that never
    changed it, without a note."""
    from lmplay.stats.runs import (
        record_resumed_change,
        settled_config,
        trained_settings,
    )

    try:  # a label damaged by hand is replaced below (earlier_overrides says so): nothing to compare with
        before = trained_settings(settled_config(out.parent))
        now = trained_settings(flatten(OmegaConf.to_container(cfg, resolve=True)))
        changed = {key: [before[key], now[key]] for key in sorted(before.keys() & now.keys())
                   if before[key] != now[key]}
        if changed:
            record_resumed_change(out, step, changed)
    except ConfigError:
        return


def earlier_overrides(path: Path) -> list[str]:
    """What the run's earlier commands typed; a damaged file (edited by hand) is said, not read as none."""
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - whatever the YAML parser raises about the file
        loaded = e
    if isinstance(loaded, ListConfig):  # as written: an ${oc.env:...} put there by hand is text, not resolved into
        return [str(o) for o in OmegaConf.to_container(loaded, resolve=False)]  # the label (a secret's value)
    kept = path.with_name(path.name + ".damaged")
    write_atomic(kept, path.read_bytes())  # this run rewrites overrides.yaml: what is legible of the old one stays
    # here (written aside and renamed: a symlink of that name in a run dir from elsewhere is replaced, not followed)
    print(f"warning: {path} is damaged ({loaded if isinstance(loaded, Exception) else 'not a list of overrides'}); "
          f"the overrides the run's earlier commands typed are lost from its label (plots and sweeps name it by "
          f"them): the damaged file is kept as {kept.name}; put them back in {path.name} by hand, one `- key=value` "
          f"a line", file=sys.stderr)
    return []


def remove_if_empty(run_dir: Path) -> None:
    """Hydra makes the run dir before the job starts; a run that failed on bad input leaves no empty one behind.
    Under torchrun, once the ranks joined the process group, rank 0's to do, which then holds the dir: a rank
    failing alone removed it while rank 0 made its lock there ("cannot be opened as the run's lock", where
    torchrun's report named the rank's error). Before the join no rank holds it, and a rank failing there removes
    it too: it may have made the dir itself, after rank 0 looked."""
    if launcher_rank() != 0 and in_process_group():
        return
    release_run_dir(run_dir)
    remove_made_dirs(run_dir)


def train(cfg: DictConfig) -> None:
    check_run_settings(cfg)
    from lmplay.runner import LMRunnerBase  # torch loads here, after the config is known to be good
    from lmplay.runner.components import config_class
    from lmplay.runner import checkpoint
    from lmplay.runner.registry import check_trained_class, unregistered_note, version_shape_note
    from lmplay.runner.report import start_report
    from lmplay.runner.stopping import stops_during_setup

    if not sys.stderr.isatty() or os.environ.get("TQDM_DISABLE"):  # where progress bars go
        from lmplay.data.hf import quiet_progress_bars
        quiet_progress_bars()  # HF's "Map" bars would flood logs; lmplay's own bar stays

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    check_run_dir(cfg, run_dir)
    model_class = config_class(cfg, "model")
    runner = LMRunnerBase(cfg, run_dir, model_class, overridden_keys())  # joins torchrun's process group, if any
    if runner.world.is_main:
        hold_run_dir(run_dir)
        remove_crash_leftovers(run_dir)
    try:
        with stops_during_setup():  # until training starts, which saves on them
            ckpt = resumed_checkpoint(run_dir, cfg.fresh)
            check_trained_class(cfg.exp_name, model_class, checkpoint.model_class(ckpt) if ckpt else None)
            try:
                runner.setup(ckpt)
            except checkpoint.DamagedCheckpoint as e:  # the run dir's .bak or stage checkpoint, where one loads
                raise ConfigError(f"{e}{checkpoint.previous_good(run_dir / CHECKPOINT)}") from None
            typed = runner.typed_keys("model")  # model.num_blocks=3, context_len: the user's own choice
            note = unregistered_note(cfg.exp_name, model_class) or (  # said on a resume too: still unloadable
                version_shape_note(cfg.exp_name, runner.model.construction_args, typed) if ckpt is None else None)
            if note and runner.world.is_main:
                print(note)
            in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
            why = runner.nothing_to_train(in_sweep) if ckpt else None
            if why is not None:  # the run stays as it was: its checkpoint and the label its plots and sweep
                if runner.world.is_main:  # summary read (.hydra/)
                    print(why)
                runner.close()
                return
            if runner.world.is_main:
                label_run(runner, run_dir, resumed=ckpt is not None, fresh=cfg.fresh)
            print(start_report(runner))
            if in_sweep:  # the sweep's default dir is named by the time it started
                from lmplay.sweep import rerun_command

                runner.resume_hint = (f"to resume the sweep (each job from its own checkpoint): "
                                      f"{rerun_command(Path(HydraConfig.get().sweep.dir))}")
            elif named_by := time_named_source(cfg):  # `hydra.run.dir=runs/${now:%H-%M-%S}`: the same command
                runner.resume_hint = time_named_resume_hint(run_dir)  # makes a new dir
                if runner.world.is_main:
                    print(f"note: the run dir is named by the time ({named_by}), so the same command again starts a "
                          f"new run: {runner.resume_hint}")
        if not in_sweep and (run_dir / JOB_FILE).is_file():  # a sweep's job trained on with a run of its own
            train_job_on(runner, run_dir)
        else:
            runner.train()
        leave_world(runner)
    finally:  # however the job ends: a sweep's next job may be started in this process while it lives on
        release_run_dir(run_dir)


def time_named_source(cfg: DictConfig) -> str:
    """The setting, as typed (its ${now:...} unresolved), that names the run dir by the time, or ''."""
    raw_dir = str(OmegaConf.to_container(HydraConfig.get().run, resolve=False)["dir"])
    raw_name = str(OmegaConf.to_container(cfg, resolve=False).get("run_name", ""))
    if "${now:" in raw_dir:
        return f"hydra.run.dir={raw_dir}"
    if "${run_name}" in raw_dir and "${now:" in raw_name:
        return f"run_name={raw_name}"
    return ""


def time_named_resume_hint(run_dir: Path) -> str:
    """How to resume a run whose dir's name holds ${now:...}: the dir it got, typed."""
    return f"to resume it, run the same command with {shell_word('hydra.run.dir=' + quote(str(run_dir.resolve())))}"


def train_job_on(runner: "LMRunnerBase", job_dir: Path) -> None:
    """Train a sweep's job on in a run of its own, and count the run in the job's record (lmplay.sweep)."""
    from lmplay.sweep import continued_job, earlier_wall_time

    earlier, started, status = earlier_wall_time(job_dir), time.time(), "failed"
    try:
        runner.train()
        status = "completed"
    except (KeyboardInterrupt, SystemExit) as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) or (e.code or 0) > 128 else "failed"
        raise
    finally:
        if runner.world.is_main:
            continued_job(job_dir, earlier, time.time() - started, status)


def check_run_settings(cfg: DictConfig) -> None:
    """The top-level settings' mistakes, before torch is imported."""
    reject_added_keys(cfg, "config", set_by_groups=["model"])  # `model` comes from the exp file
    check_value_types(cfg, "config", nullable={"max_steps": int, "grad_clip": float})
    if "exp_name" in overridden_keys():  # the checkpoint's experiment name: sampling and resuming go by it
        raise ConfigError("exp_name is the name of the exp= config the run uses, not a setting: choose exp=NAME (a "
                          "config of your own: --config-dir DIR with DIR/exp/NAME.yaml)")
    if not isinstance(cfg.exp_name, str):  # `exp=[a,b]`: Hydra merges a list of configs, and the run has no name
        raise ConfigError("exp=[...], a list of configs merged, names no one experiment: exp= takes one name; a "
                          "sweep over several is -m exp=a,b")
    if cfg.run_name is None or not str(cfg.run_name).strip():
        raise ConfigError(f"run_name={'null' if cfg.run_name is None else repr('')} would put the run into "
                          f"outputs/{'None' if cfg.run_name is None else ''}; give it a name, like run_name=try1")
    if HydraConfig.get().mode == RunMode.RUN and not str(HydraConfig.get().run.dir).strip():  # an unset $VAR
        raise ConfigError("hydra.run.dir='' would train into the current directory; give the run a dir of its own, "
                          "like hydra.run.dir=outputs/try1 (or leave it out: outputs/RUN_NAME)")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps={cfg.max_steps} must be >= 1 (or null: train through the curriculum)")


def check_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """A sweep's dir is not a run's; a requeued SLURM job does not start its run over twice; a symlink named as the
    run's own file is not followed (a sweep's job dirs are checked here: Hydra makes them as each job starts)."""
    if (link := planted_symlink(run_dir)) is not None:
        raise ConfigError(symlink_refused(link))
    if (run_dir / "multirun.yaml").is_file():  # a run there would read, to the plots, as the sweep's only run
        jobs = sorted(p.parent.name for p in run_dir.glob(f"*/{CHECKPOINT}"))
        example = f"\"hydra.run.dir='{run_dir / jobs[0]}'\"" if jobs else "hydra.run.dir=ITS_DIR"
        raise ConfigError(f"{run_dir} is a sweep's dir (it holds multirun.yaml), not a run's: train one of its jobs on "
                          f"with its own dir, e.g. {example}, or give another run dir")
    if cfg.fresh and started_over_in_this_slurm_job(run_dir):  # submitit requeues the command as typed
        print(f"fresh=true is not applied again: this SLURM job (SLURM_JOB_ID={os.environ['SLURM_JOB_ID']}) started "
              f"the run over before it was requeued, and the requeue resumes it")
        cfg.fresh = False


def label_run(runner: "LMRunnerBase", run_dir: Path, resumed: bool, fresh: bool) -> None:
    """Write the settings the run trains with (.hydra/), which plots and the sweep summary read."""
    from lmplay.runner.base import GROUPS

    chosen = [group for group in GROUPS if group in runner.overridden]  # `optimizer=adamw` on this command
    reset = {alias for group in chosen for alias in runner.interpolated_keys(group).values()}
    label = functools.partial(save_hydra_config, runner.settled_config, run_dir, resumed=resumed,
                              reset=reset - runner.overridden, unread=runner.unread_keys,
                              resumed_at=runner.runner_c.progress["step"])
    if not resumed:
        label()
    else:  # a resume's settings label the run once it has saved a step trained with them: one that failed
        runner.on_first_save = label  # or was killed before would be plotted as what it never trained with
    if fresh:
        note_fresh_start(run_dir, runner.replaced_dir)


def leave_world(runner) -> None:
    """Leave torchrun's process group once the run is saved and done: a Ctrl-C now, or a rank that it stopped
    first ("closed by peer"), ends nothing that was not finished, so it is no error."""
    from lmplay.runner.distributed import lost_a_peer

    try:
        runner.close()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        if not lost_a_peer(e):
            raise


def resumed_checkpoint(run_dir: Path, fresh: bool) -> dict | None:
    """The run dir's checkpoint to resume from, or None to start (fresh=true: over, the old run set aside later).
    A dir whose run cannot be resumed as it is, and would be trained over, is refused."""
    ckpt_path = run_dir / CHECKPOINT
    bak = backup_of(ckpt_path)
    if ckpt_path.is_dir():
        raise ConfigError(f"{ckpt_path} is a directory, not a checkpoint: move it away, or use another run_name")
    if not fresh and (moving := interrupted_set_aside(run_dir)):
        raise ConfigError(f"a fresh=true start was cut short while it moved the old run into {moving}: rerun with "
                          f"fresh=true to finish it, or move its files back into {run_dir} to resume the old run")
    if not fresh and not ckpt_path.exists() and bak.is_file():  # starting over would rotate it away
        raise ConfigError(f"{run_dir} has {bak.name} but no {CHECKPOINT}: rename it to {CHECKPOINT} to resume from "
                          f"it, or fresh=true to start over")
    if not ckpt_path.exists() or fresh:
        return None
    from lmplay.runner import checkpoint

    ckpt = checkpoint.load(ckpt_path)
    if "runner" not in ckpt["components"] and trained_over(run_dir):  # copied over a run's own checkpoint: its
        raise ConfigError(f"{ckpt_path} holds a model alone (saved by save_model, or imported), with no training "
                          f"state, in a run dir whose run trained on after it was put there: training it would start "
                          f"at step 0 over that run's records; put the run's own checkpoint back to resume it, or "
                          f"train this model in a run dir of its own (as its {CHECKPOINT}, with another run_name)")
    print(f"resuming {ckpt_path} (fresh=true starts over)")
    return ckpt


def trained_over(run_dir: Path) -> bool:
    """Whether a model alone at `run_dir`'s model.lmp replaced a run's own checkpoint there: the run saved a training
    checkpoint (its .bak or a stage's), or its stats.json is older than the model. A model imported there and
    fine-tuned has neither until its first save: its retry after a crash or a divergence resumes from it."""
    from lmplay.runner.checkpoint import trained_step

    saved = [backup_of(run_dir / CHECKPOINT), *(p for p in run_dir.glob("model.*.lmp") if p.name != CORRUPTED)]
    stats = run_dir / STATS
    newer = stats.is_file() and (run_dir / CHECKPOINT).stat().st_mtime > stats.stat().st_mtime
    return newer or any(p.is_file() and trained_step(p) is not None for p in saved)


def note_fresh_start(run_dir: Path, replaced: Path | None) -> None:
    if replaced:
        print(f"fresh=true: the replaced run's checkpoints, stats and TensorBoard files are kept in {replaced}")
    if job := os.environ.get("SLURM_JOB_ID"):
        write_atomic(run_dir / FRESH_MARK, job)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_job(cfg)
    except SystemExit as e:  # a signal stopped the run (which saved first, or had not started): a sweep's job says
        if HydraConfig.get().mode == RunMode.MULTIRUN and isinstance(e.code, int) and e.code > 128 \
                and launcher_rank() == 0:  # so in its row
            from lmplay.sweep import job_interrupted
            with contextlib.suppress(LmplayError, OSError):  # the exit code must stay 128+N
                job_interrupted(HydraConfig.get())
        raise


def run_job(cfg: DictConfig) -> None:
    """train(cfg), its errors as one line (a sweep's job as its row's error) and a stop during set-up said."""
    try:
        with readable_config():
            train(cfg)
    except LmplayError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise JobError(f"error: {e}") from e  # the sweep summary shows the error; the other jobs run
        try:
            report(e)  # under torchrun: rank 0's line, and every rank's in torchrun's report
        finally:  # another rank's after its wait for rank 0 (cli.fail)
            remove_if_empty(Path(HydraConfig.get().runtime.output_dir))
    except Exception as e:  # re-raised unless a Ctrl-C caused it
        from lmplay.runner.distributed import lost_a_peer

        if lost_a_peer(e):  # the rank that failed says why (rank 0 itself, or torchrun's report for another)
            if launcher_rank() != 0:
                raise SystemExit(1) from None
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            if not (saved := (run_dir / CHECKPOINT).exists()):
                remove_if_empty(run_dir)
            fail("another rank stopped (torchrun's report names it and, for an error of lmplay's, its line); "
                 + (f"the same command{' without fresh=true' if cfg.fresh else ''} resumes from the last checkpoint"
                    if saved else
                    "nothing was saved yet, so the same command starts over"), 1)
        if (stop := ctrl_c_in(e)) is None:
            raise
        interrupted_before_training(getattr(stop, "signum", signal.SIGINT))  # a SIGTERM read as a Ctrl-C said SIGINT
    except KeyboardInterrupt as e:
        interrupted_before_training(getattr(e, "signum", signal.SIGINT))


def interrupted_before_training(signum: int = signal.SIGINT) -> None:
    """Rank 0 speaks for the run: torchrun forwards a Ctrl-C to every rank, and stops the others with a SIGTERM
    when rank 0 fails alone (a run dir in use), which they must not report as the user's."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    remove_if_empty(run_dir)
    if launcher_rank() == 0:
        why = " (torchrun stops every rank when one fails, its report naming it, or when it is stopped itself)" if (
            signum == signal.SIGTERM and "TORCHELASTIC_RUN_ID" in os.environ) else ""
        fresh = (override_value(HydraConfig.get().overrides.task, "fresh") or "").lower() == "true"
        saved = ("nothing was saved" if not (run_dir / CHECKPOINT).is_file() else
                 f"the run is as it was ({run_dir / CHECKPOINT}): the same command starts it over, and without "
                 f"fresh=true it resumes" if fresh else
                 f"nothing new was saved, and the run resumes from its last checkpoint ({run_dir / CHECKPOINT})")
        tell(f"{signal.Signals(signum).name}: stopped before training started{why}; {saved}\n")
    raise SystemExit(128 + signum) from None


def cli() -> None:
    run_hydra_app(main, translate_flags(sys.argv[1:], SEED_FLAGS, SEED_SWITCHES, "config"), "config")


if __name__ == "__main__":
    cli()
