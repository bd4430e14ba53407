"""Every command's `--help` is its options' reference: each option names its default (or says it is
required), each step option its unit, and the details that change results are there (issue 22)."""

import click
import pytest

from rewind.cli import STEP_UNIT, cli


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


COMMANDS = dict(_commands(cli))


def _helps(name: str) -> dict[str, str]:
    """Option flag -> its help line as `rewind NAME --help` shows it (wrapping aside)."""
    command = COMMANDS[name]
    ctx = click.Context(command, info_name=name)
    return {p.opts[0]: p.get_help_record(ctx)[1] for p in command.get_params(ctx)
            if isinstance(p, click.Option) and "--help" not in p.opts}


def test_every_option_of_every_command_names_its_default():
    assert {"train", "imp", "critical-period", "warm-start", "stats", "stability", "linear pathways",
            "linear completion", "reproduce"} <= set(COMMANDS)
    lacking = [f"{name} {flag}" for name in COMMANDS for flag, text in _helps(name).items()
               if "[default: " not in text and "[required]" not in text]
    assert lacking == []


def test_every_step_option_says_its_unit():
    """A run's step settings (the deep-linear studies count plain steps) and stability's --at."""
    from rewind import config as cfg

    step_flags = {cfg.flag(name) for name, (_, f) in cfg.all_fields().items() if f.metadata.get("step")}
    shown = {(name, flag): text for name in ("train", "imp", "critical-period", "warm-start", "stability")
             for flag, text in _helps(name).items() if flag in step_flags | {"--at"}}
    assert {"--save-every", "--lr-milestones", "--after", "--second-steps", "--at"} <= {f for _, f in shown}
    assert [key for key, text in shown.items() if STEP_UNIT not in text] == []
    assert "iterations '500it' or epochs '2ep'" in STEP_UNIT


@pytest.mark.parametrize("name, flag, sentence", [
    ("warm-start", "--momentum", "in warm-start studies momentum 0"),
    ("imp", "--momentum", "for sgd 0.9, the IMP recipe's"),
    ("train", "--lr-milestones", "schedule steps at which the learning rate"),
    ("train", "--lr-milestones", "main-run iteration t is schedule step P + t"),
    ("train", "--warmup", "in schedule steps"),
    ("train", "--save-at", "main-run iterations"),
    ("train", "--pretrain-steps", "'0it' with a mode is refused"),
    ("train", "--pretrain-blur-size", "this size (pixels)"),
    ("train", "--augment", "drawn per example and epoch from --aug-seed"),
    ("train", "--fisher-every", "sampled from the model's own output"),
    ("train", "--until-train-acc", "metrics.csv split 'fit'"),
    ("critical-period", "--deficit", "one KIND[(NAME=VALUE)] without a window"),
    ("critical-period", "--deficit", "blur (size: the side in pixels"),
    ("critical-period", "--switch-at", "'0,20,40ep' is epochs 0, 20 and 40"),
    ("critical-period", "--starts", "'0,20,40ep' is epochs 0, 20 and 40"),
    ("imp", "--from", "trains differently from the trunk is refused"),
    ("imp", "--save-every", "on the trunk's grid"),
    ("imp", "--perturb", "shuffle-keep-signs: magnitudes permuted, each position keeps its sign"),
    ("warm-start", "--parallel", "warm-start: arms of one first phase"),
    ("warm-start", "--stages", "n stages need n + 1 class groups"),
    ("warm-start", "--stages", "reset at each stage unless --optimizer-state carry"),
    ("stability", "--noise", "order seeds 1 and 2"),
    ("stability", "--bn", "first 40 training batches, the same at every point"),
])
def test_help_carries_the_detail_that_changes_results(name, flag, sentence):
    assert sentence in " ".join(_helps(name)[flag].split())
