"""Run identities are pinned: an archive made by an earlier rewind resumes and branches under this one.

Every run folder a study plans carries the hash of its identity in its name (trunks are checked
by `Config.hash()`), so the folders `--dry-run` plans for a fixed set of commands pin every kind
of identity at once: trunk, pre-training, IMP branch, control, critical-period arm, warm-start
arm, deep-linear trunk and branch. A change here means existing archives would no longer be
found or resumed: keep the hashes, or migrate the archives and say so.

To see the current values after a deliberate, documented change: `pytest tests/test_hashes.py -s`
prints them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_cli
from rewind import config as cfg

REPO = Path(__file__).resolve().parents[1]

SMALL = ["--data", "synthetic", "--train-examples", "1000", "--test-examples", "500", "--model", "resnet8",
         "--width", "8", "--steps", "120it", "--batch-size", "32", "--lr-milestones", "80it"]

# Command -> the run folders it plans, relative to --out (hashes in the names).
COMMANDS = {
    "imp": ["imp", *SMALL, "--rewind-iter", "0,20", "--levels", "2"],
    "imp-blur": ["imp", *SMALL, "--rewind-iter", "20", "--levels", "1", "--pretrain", "blur",
                 "--pretrain-steps", "40it"],
    "imp-control": ["imp", *SMALL, "--rewind-iter", "20", "--levels", "1", "--control", "random-reinit"],
    "imp-adam": ["imp", *SMALL, "--rewind-iter", "20", "--levels", "1", "--optimizer", "adam", "--lr", "0.001"],
    "critical": ["critical-period", *SMALL, "--deficit", "blur(size=8)", "--switch-at", "0,40it",
                 "--after", "40it"],
    "warm": ["warm-start", *SMALL, "--second-steps", "60it"],
    # every plasticity study but the one-phase ones (issue 22 gave those a new shape: no first phase)
    **{f"warm-{study}": ["warm-start", *SMALL, "--second-steps", "60it", "--study", study, *extra] for study, extra in (
        ("length", ["--first-steps", "0,40it"]), ("reset", []), ("shrink", ["--shrink", "0.3", "--perturb-sigma",
        "0.01"]), ("lr", ["--second-lr", "0.01,0.1"]), ("size", ["--widths", "4,8"]))},
    "warm-optimizers": ["warm-start", *SMALL, "--second-steps", "60it", "--optimizers", "sgd:0.1:0,rmsprop:0.001"],
}

PINNED = {
    "imp": [".", "branches/imp-k0-9ca7ead7", "branches/imp-k20-8066541d"],
    "imp-blur": [".", "branches/imp-k20-7cf613c2"],
    "imp-control": [".", "branches/imp-k20-8066541d", "branches/imp-k20-random-reinit-306d33c4"],
    "imp-adam": [".", "branches/imp-k20-e724435c"],
    "critical": [".", "branches/critical-0-9c855418", "branches/critical-40-b8d8991c"],
    # issue 19: an SGD given without momentum trains with momentum 0 in warm-start studies (both papers'
    # code), a change of what the arms train, so of their identity.
    "warm": [
        ".",
        "branches/warm-reset-31ea0501",
        "branches/warm-scratch-ff0dbc3e",
        "branches/warm-shrink-perturb-de7bd505",
        "branches/warm-warm-2607b8c0",
    ],
    # The plasticity studies, unchanged by issue 22 (the same folders as at 7fe4de7, before it).
    "warm-length": [
        ".",
        "branches/warm-scratch-df02b063",
        "branches/warm-warm-310edaf5",
        "branches/warm-warm-bc6dea64",
    ],
    "warm-reset": [
        ".",
        "branches/warm-reset-0544ceff",
        "branches/warm-reset-586dffeb",
        "branches/warm-reset-870f87e2",
        "branches/warm-reset-a6573272",
        "branches/warm-reset-e05c897e",
        "branches/warm-scratch-df02b063",
        "branches/warm-warm-2607b8c0",
    ],
    "warm-shrink": [
        ".",
        "branches/warm-scratch-df02b063",
        "branches/warm-shrink-perturb-594e084b",
        "branches/warm-warm-2607b8c0",
    ],
    "warm-lr": [
        "lr0.1",
        "lr0.1/branches/warm-scratch-df02b063",
        "lr0.1/branches/warm-scratch-e017fd7e",
        "lr0.1/branches/warm-warm-0fcd2741",
        "lr0.1/branches/warm-warm-2607b8c0",
    ],
    "warm-size": [
        "w4",
        "w4/branches/warm-scratch-ad15499d",
        "w4/branches/warm-warm-b63e9b33",
        "w8",
        "w8/branches/warm-scratch-df02b063",
        "w8/branches/warm-warm-2607b8c0",
    ],
    "warm-optimizers": [
        "rmsprop0.001-m0",
        "rmsprop0.001-m0/branches/warm-reset-735624af",
        "rmsprop0.001-m0/branches/warm-scratch-6db812d5",
        "rmsprop0.001-m0/branches/warm-shrink-perturb-9d72fbea",
        "rmsprop0.001-m0/branches/warm-warm-2e25a2d3",
        "sgd0.1-m0",
        "sgd0.1-m0/branches/warm-reset-31ea0501",
        "sgd0.1-m0/branches/warm-scratch-ff0dbc3e",
        "sgd0.1-m0/branches/warm-shrink-perturb-de7bd505",
        "sgd0.1-m0/branches/warm-warm-2607b8c0",
    ],
}

# Config.hash() of the shipped recipes and of the defaults (the trunk's identity).
RECIPES = ("smoke", "resnet20_cifar10", "resnet56_cifar10", "vgg16_cifar10", "lenet_mnist",
           "critical_period_smoke", "critical_period_blur", "resnet18_cifar10_warmstart",
           "resnet18_cifar10_plasticity")
PINNED_RECIPES = {
    "smoke": "b89b6e42f7f0",
    "resnet20_cifar10": "06d0e1d6a518",
    "resnet56_cifar10": "6ee3ed4360fd",
    "vgg16_cifar10": "6199317d020d",
    "lenet_mnist": "749845239216",
    "critical_period_smoke": "80f65792f4ff",
    "critical_period_blur": "04d8ceca81d0",  # issue 19: All-CNN, the paper's network
    "resnet18_cifar10_warmstart": "22243994a9a8",  # issue 19: holdout 1/3, normalize half
    "resnet18_cifar10_plasticity": "35d5c906152c",
}


def planned_folders(name: str, tmp_path, capsys) -> list[str]:
    out = tmp_path / name
    code, text, err = run_cli([*COMMANDS[name], "--data-dir", str(tmp_path / "cache"), "--out", str(out),
                               "--dry-run"], capsys)
    assert code == 0, err
    folders = [line.strip() for line in text.splitlines() if line.startswith("      ")]
    return sorted(re.sub(r"^" + re.escape(str(out)) + "/?", "", f) or "." for f in folders)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_planned_run_folders_keep_their_hashes(name, tmp_path, capsys):
    folders = planned_folders(name, tmp_path, capsys)
    print(f"\n    {name!r}: {folders!r},")
    assert folders == PINNED[name]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trunk_hashes_are_pinned(recipe):
    config = cfg.load(REPO / "configs" / f"{recipe}.toml", {"source": "synthetic"})
    print(f"\n    {recipe!r}: {config.hash()!r},")
    assert config.hash() == PINNED_RECIPES[recipe]


# The deep-linear sweeps' trunk and branch identities (their folders: depth<D>-seed<S>/branches/...),
# at the shipped configs' settings.
PINNED_LINEAR = {  # pathways: issue 19 made the authors' init draw the default (--init-draw modes: the old)
    "pathways-d2-s0": "8913f40dc81b",
    "pathways-d2-s0-gate400": "47c2c7539862",
    "pathways-d4-s1": "afd1aab63cdc",
    "pathways-d4-s1-gate400": "ec083847aefc",
    "completion-d1-s0": "24d1872a279a",
    "completion-d1-s0-tc20000": "d338a00167e9",
    "completion-d3-s2": "10fd6e320dde",
    "completion-d3-s2-tc20000": "f9422fd8f2fa",
}


def linear_identities() -> dict[str, str]:
    from rewind.archive.run import identity_hash
    from rewind.linear import completion, pathways
    from rewind.linear import config as lc

    p = lc.load_pathways(str(REPO / "configs" / "linear_pathways.toml")).pathways
    c = lc.load_completion(str(REPO / "configs" / "linear_completion.toml")).completion
    out = {}
    for depth, seed in ((2, 0), (4, 1)):
        trunk = pathways.trunk_identity(p, depth, seed)
        out[f"pathways-d{depth}-s{seed}"] = identity_hash(trunk)
        out[f"pathways-d{depth}-s{seed}-gate400"] = identity_hash(pathways.branch_identity(p, trunk, 400))
    for depth, seed in ((1, 0), (3, 2)):
        trunk = completion.trunk_identity(c, depth, seed)
        out[f"completion-d{depth}-s{seed}"] = identity_hash(trunk)
        out[f"completion-d{depth}-s{seed}-tc20000"] = identity_hash(completion.branch_identity(trunk, 20000, 30000))
    return out


def test_deep_linear_identities_are_pinned():
    found = linear_identities()
    print("".join(f"\n    {k!r}: {v!r}," for k, v in found.items()))
    assert found == PINNED_LINEAR
