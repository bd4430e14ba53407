"""A branch on an existing trunk (`rewind imp --from`): the trunk's own settings, with this command's
IMP, runtime and observation settings; a setting given that trains differently is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rewind import config as cfg
from rewind import steps
from rewind.archive import run as runs
from rewind.errors import UserError


def trunk_config(config: cfg.Config, root: Path, given: set[str] | None = None) -> cfg.Config:
    """The trunk's own data/model/train/pretrain settings, with this command's IMP, runtime and
    observation (eval, log, save, statistics) settings.

    A setting this command gives that trains differently from the trunk's is refused rather than
    ignored (`given`: the names the user set; by default, those not at their default).
    `--data` may name the trunk's dataset at another path.
    """
    d = runs.read_trunk(root).manifest.data
    recorded = {k: v for k, v in d["config"].items() if k not in ("imp", "study", "runtime", "launch")}
    held = cfg.from_record(recorded, where=str(root / "manifest.json"))
    sections = {k: v for k, v in held.to_dict().items() if k not in ("imp", "study", "runtime", "launch")}
    ipe = d["iterations_per_epoch"]
    given = given if given is not None else _not_default(config)
    trunk_values = _settings(held)
    settings = {k: v for k, v in _settings(config).items() if k in given}
    differ = [f"{k} {v!r} (the trunk's: {trunk_values[k]!r})" for k, v in settings.items()
              if k not in cfg.OBSERVATION_FIELDS and k != "source"
              and _resolved(k, v, ipe) != _resolved(k, trunk_values[k], ipe)]
    moved = {}
    if "source" in settings and settings["source"] != trunk_values["source"]:
        if same_dataset(settings["source"], trunk_values["source"]):
            moved = {"source": settings["source"]}
        else:
            differ.append(f"source {settings['source']!r} (the trunk's: {trunk_values['source']!r})")
    if differ:
        raise UserError(f"--from {root} trains branches with the trunk's own settings, and this command sets "
                        f"others (on its command line or in --config): {'; '.join(differ)}. Drop them, or train "
                        "a new trunk with --out")
    observed = {k: v for k, v in settings.items() if k in cfg.OBSERVATION_FIELDS}
    # The trunk's recorded runtime (data folder, device) stands unless this command sets one.
    runtime = {k: v for k, v in dataclasses.asdict(config.runtime).items() if k in given}
    overrides = {**dataclasses.asdict(config.imp), **dataclasses.asdict(config.study),
                 **dataclasses.asdict(config.launch), **runtime, **observed, **moved}
    return cfg.from_sections(sections, overrides)


def _not_default(config: cfg.Config) -> set[str]:
    defaults = cfg.Config().to_dict()
    return {k for section, table in config.to_dict().items() for k, v in table.items() if v != defaults[section][k]}


def _settings(config: cfg.Config) -> dict:
    """The data, model, train and pretrain fields by name."""
    return {k: v for section in ("data", "model", "train", "pretrain")
            for k, v in dataclasses.asdict(getattr(config, section)).items()}


def _resolved(name: str, value, ipe: int):
    """Steps as iterations ('1ep' and '391it' are one value), anything else as it is."""
    step = cfg.all_fields()[name][1].metadata.get("step")
    if step == "one":
        return steps.parse(value, ipe) if str(value).strip() else 0
    if step == "list":
        return steps.parse_list(value, ipe)
    return value


def same_dataset(given: str, recorded: str) -> bool:
    """The same dataset at another path: equal identity (name and size), or the recorded path is
    gone and the names agree."""
    a, b = cfg.dataset_identity(given), cfg.dataset_identity(recorded)
    return a == b or (b.endswith(":0") and a.rsplit(":", 1)[0] == b.rsplit(":", 1)[0])
