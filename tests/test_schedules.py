"""Each lr schedule follows its formula."""

import math
import re

import pytest

from lmplay.errors import ConfigError
from lmplay.runner.schedules import Constant, Cosine, LinearWarmup, WarmupStableDecay

BASE, TOTAL = 1e-3, 100


def curve(schedule):
    return [schedule.lr(BASE, step, TOTAL) for step in range(TOTAL)]


def test_constant():
    assert curve(Constant()) == [BASE] * TOTAL


def test_linear_warmup_by_fraction_and_by_steps():
    by_fraction = curve(LinearWarmup(warmup_fraction=0.1))
    assert by_fraction[:10] == pytest.approx([BASE * (s + 1) / 11 for s in range(10)])  # nanoGPT's warmup
    assert by_fraction[10:] == [BASE] * 90
    assert curve(LinearWarmup(warmup_steps=10)) == by_fraction


def test_cosine_reaches_min_lr():
    lrs = curve(Cosine(warmup_steps=10, min_lr=1e-4))
    for step in range(10, TOTAL):
        progress = (step - 10) / 89
        assert lrs[step] == pytest.approx(1e-4 + (BASE - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress)))
    assert lrs.count(BASE) == 1 and lrs[10] == BASE  # the peak comes once, right after warmup
    assert lrs[-1] == pytest.approx(1e-4)  # and the stage's last step trains at min_lr


def test_warmup_stable_decay():
    lrs = curve(WarmupStableDecay(warmup_steps=10, decay_fraction=0.2, min_lr=0.0))
    assert lrs[10:82] == [BASE] * 72          # 90 post-warmup steps, the last 18 decay
    assert lrs[82:] == pytest.approx([BASE * (1 - (i + 1) / 18) for i in range(18)])
    assert lrs[-1] == pytest.approx(0.0)


def test_bad_warmup_fraction():
    with pytest.raises(ConfigError, match="warmup_fraction=1.5"):
        LinearWarmup(warmup_fraction=1.5)


@pytest.mark.parametrize("overrides, message", [
    (["scheduler=cosine", "lr=1e-5"], (r"scheduler\.min_lr=6e-05 is above the lr=1e-05 of curriculum stage "
                                       r"'shakespeare', so its Cosine schedule would raise the lr as it decays; set "
                                       r"scheduler\.min_lr to 1e-06 \(a tenth\) or 0")),
    (["scheduler=cosine", "lr=0"], r"above the lr=0 of .* set scheduler\.min_lr to 0$"),
    ([("curriculum.stages=[{name: ft, datasets: [shakespeare], steps: 5, "
       "overrides: {scheduler: {_target_: lmplay.runner.schedules.Cosine, min_lr: 0.1}}}]")],
     r"the stage's own scheduler override's min_lr=0\.1 is above the lr=0\.003 .* set it to 0\.0003"),
    (["scheduler=wsd", "scheduler.min_lr=0.01"], r"scheduler\.min_lr=0\.01 is above the lr=0\.003"),
    (["scheduler=cosine", "curriculum.stages=[{name: ft, datasets: [shakespeare], steps: 5, overrides: {lr: 1.0e-5}}]"],
     r"above the lr=1e-05 of curriculum stage 'ft'"),
])
def test_a_min_lr_above_the_lr_is_refused_before_training(tmp_path, overrides, message):
    """nanoGPT's absolute min_lr (6e-5) under a fine-tuning lr: the 'decay' climbed from 1e-5 to 6e-5, silently."""
    from conftest import make_runner

    with pytest.raises(ConfigError, match=message):
        make_runner(["exp=test_runner", "device=cpu", *overrides], tmp_path)


def test_a_stage_scheduler_override_the_schedule_cannot_take_names_the_stage(tmp_path):
    """Was `scheduler: unknown key 'warmup_fraction'; valid keys: ` (nothing), with no stage and nothing typed."""
    from conftest import make_runner

    stages = ("curriculum.stages=[{name: c, datasets: [shakespeare], steps: 5, "
              "overrides: {scheduler: {warmup_fraction: 0.5}}}]")
    with pytest.raises(ConfigError, match=r"^curriculum stage 'c' \(its overrides' scheduler\): scheduler: unknown key "
                                          r"'warmup_fraction'; it takes none$"):
        make_runner(["exp=test_runner", "device=cpu", "scheduler=constant", stages], tmp_path)


@pytest.mark.parametrize("name, target", [("wsd", "lmplay.runner.schedules.WarmupStableDecay, warmup_steps: 10"),
                                          ("constant", "lmplay.runner.schedules.Constant"),  # it takes no warmup
                                          ("nosuch", "..., warmup_steps: 10")])
def test_a_stage_scheduler_given_as_a_group_name_is_shown_its_mapping(tmp_path, name, target):
    """`scheduler: cosine` reads like the command line's scheduler=cosine, but a stage takes a mapping."""
    from conftest import make_runner

    stages = f"curriculum.stages=[{{name: c, datasets: [shakespeare], steps: 5, overrides: {{scheduler: {name}}}}}]"
    with pytest.raises(ConfigError, match=rf"must be a mapping like \{{_target_: {re.escape(target)}\}}, not '{name}'$"):
        make_runner(["exp=test_runner", "device=cpu", stages], tmp_path)


@pytest.mark.parametrize("overrides, message", [
    (["scheduler=cosine", "scheduler.min_lr=-0.003"], r"^scheduler\.min_lr=-0\.003 must be >= 0$"),
    (["scheduler=wsd", "scheduler.min_lr=nan"], r"^scheduler\.min_lr=nan must be >= 0$"),
    (["scheduler=wsd", "scheduler.decay_fraction=3"], r"^scheduler\.decay_fraction=3 must be in \(0, 1\]"),
    (["scheduler=wsd", "scheduler.decay_fraction=-1"], r"^scheduler\.decay_fraction=-1 must be in \(0, 1\]"),
    (["scheduler.warmup_steps=abc"], r"^scheduler\.warmup_steps='abc' should be a number or null$"),
    (["+curriculum.stages.0.overrides.scheduler={warmup_steps: abc}"],
     (r"^curriculum stage 'shakespeare' \(its overrides' scheduler\): scheduler\.warmup_steps='abc' should be "
      r"a number")),
])
def test_a_schedule_that_would_train_other_than_asked_is_refused_before_training(tmp_path, overrides, message):
    """A negative min_lr trained the model up its loss for the second half of a cosine (and saved it over the good
    checkpoints); decay_fraction=3 never reached the lr; warmup_steps=abc was a TypeError traceback."""
    from conftest import make_runner

    with pytest.raises(ConfigError, match=message):
        make_runner(["exp=test_runner", "device=cpu", *overrides], tmp_path)


def test_a_warmup_longer_than_its_stage_is_said_as_the_stage_starts(tmp_path, capsys):
    """warmup_steps=1000 on a stage of 180 steps trained at up to 18% of the lr, and nothing said so; nor where
    max_steps stops the run inside the warmup."""
    from conftest import make_runner

    plan = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 20}, "
            "{name: b, datasets: [shakespeare], steps: 30}]")
    runner = make_runner(["exp=test_runner", "device=cpu", plan, "scheduler.warmup_steps=25", "max_steps=44"],
                         tmp_path)
    runner.train()
    notes = [line for line in capsys.readouterr().out.splitlines() if "warms up" in line]
    assert notes == [("note: the lr schedule warms up over 25 steps and stage 'a' trains 20 here: its lr climbs to "
                      "0.00231 and never reaches lr=0.003; set scheduler.warmup_steps below 20, or "
                      "scheduler.warmup_fraction"),
                     ("note: the lr schedule warms up over 25 steps and stage 'b' trains 24 here: its lr climbs to "
                      "0.00277 and never reaches lr=0.003; set scheduler.warmup_steps below 24, or "
                      "scheduler.warmup_fraction")]  # 30 steps, of which max_steps lets 24 train


def test_a_stage_s_schedule_from_a_module_not_imported_says_how_to_load_it(tmp_path):
    """A stage naming a schedule of one's own was told it 'is not an lr schedule': it was, but not imported."""
    from conftest import make_runner

    plan = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 5, "
            "overrides: {scheduler: {_target_: my_lab_not_imported.InvSqrt}}}]")
    with pytest.raises(ConfigError, match=r"a stage names a schedule of its own module only where the run has imported "
                                          r"it .*: make it the run's scheduler \(scheduler=NAME, its conf file\)"):
        make_runner(["exp=test_runner", "device=cpu", plan], tmp_path)


def test_a_checkpoint_s_schedule_value_an_older_lmplay_took_says_so_and_how_to_replace_it(tmp_path):
    """min_lr=-1e-4 in a checkpoint from before the check: 'scheduler.min_lr=-0.0001 must be >= 0', as if typed."""
    from conftest import make_runner

    from lmplay.runner import checkpoint

    make_runner(["exp=test_runner", "device=cpu", "scheduler=cosine", "max_steps=1"], tmp_path).train()
    ckpt = checkpoint.load(tmp_path / "model.lmp")
    ckpt["components"]["lr_schedulers"]["state_args"]["min_lr"] = -1e-4
    with pytest.raises(ConfigError, match=r"^the checkpoint's scheduler.min_lr=-0.0001 must be >= 0: an older lmplay "
                                          r"trained with it unchecked; type \+scheduler.min_lr=VALUE to replace it$"):
        make_runner(["exp=test_runner", "device=cpu", "max_steps=2"], tmp_path, ckpt)  # the config's has no min_lr
    ckpt["components"]["lr_schedulers"]["state_args"].update(min_lr=0.0, warmup_fraction=2.0)
    with pytest.raises(ConfigError, match=r"type scheduler.warmup_fraction=VALUE to replace it$"):  # it has this one
        make_runner(["exp=test_runner", "device=cpu", "max_steps=2"], tmp_path, ckpt)


def test_a_schedule_of_one_s_own_with_a_required_argument_unset_is_one_line(tmp_path, monkeypatch):
    """Its None reached the schedule, and the first step failed with a TypeError traceback."""
    from conftest import make_runner

    (tmp_path / "own_schedule.py").write_text(
        "from lmplay.runner.schedules import Schedule\n\n\nclass Periodic(Schedule):\n"
        "    def __init__(self, period: int, warmup_fraction: float = 0.0, warmup_steps: int | None = None):\n"
        "        super().__init__(warmup_fraction, warmup_steps)\n        self.period = period\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^own_schedule.Periodic needs scheduler.period, which its scheduler config "
                                          r"leaves unset \(or null\)"):
        make_runner(["exp=test_runner", "device=cpu", "scheduler._target_=own_schedule.Periodic"], tmp_path / "run")


def test_a_torch_lr_scheduler_as_the_schedule_is_refused_for_its_kind_not_for_a_key(tmp_path):
    """scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR was told `unknown key 'warmup_fraction'`: a key
    the user never typed, about a class lmplay cannot run at all."""
    from conftest import make_runner

    with pytest.raises(ConfigError, match=r"^scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR is not an "
                                          r"lmplay lr schedule: .*subclasses of lmplay.runner.schedules.Schedule"):
        make_runner(["exp=test_runner", "device=cpu", "scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR"],
                    tmp_path / "run")
