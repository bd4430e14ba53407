"""The settings machinery: sections as frozen dataclasses, the one source for TOML tables, CLI flags,
--help lines, unknown-key errors, manifests and run hashes.

A kind of settings (`rewind.config.Config`, a deep-linear study's) is a `Settings` subclass listing
its sections; a study or executor adds its own section to a kind with `register`. Every field is
declared with `_f`: its default, its help, and what it may hold (choices, a numeric range, steps),
checked when the settings are built. Field names are unique across a kind's sections, so every
field is also a flag `--field-name` and an override by name. Nothing here loads torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from dataclasses import field, fields
from pathlib import Path
from typing import Any, ClassVar

from rewind import steps
from rewind.errors import UserError

# Valid ranges of numeric fields: name -> (test, how the message says it).
RANGES = {
    "positive": (lambda v: v > 0, "> 0"),
    "nonnegative": (lambda v: v >= 0, ">= 0"),
    "count0": (lambda v: v >= 0, "a whole number >= 0"),
    "count1": (lambda v: v >= 1, "a whole number >= 1"),
    "fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "open_unit": (lambda v: 0 < v < 1, "in (0, 1)"),
    "unit": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "proportion": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


def _f(default: Any, help: str, flag: str | None = None, choices: tuple[str, ...] | None = None,
       valid: str | None = None, step: str | None = None) -> Any:
    """A settings field: its default, its --help text, its flag if not --field-name, its choices (strings)
    or valid range (numbers, a key of RANGES: every int and float field has one); `step`: 'one' for
    a step ('500it', '2ep'), 'list' for a comma-separated list of them."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "valid": valid,
                                            "step": step})


def flag_of(f: dataclasses.Field) -> str:
    """A field's command-line flag: its own (`--data` for `source`), else `--name-with-dashes`."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _check_value(f: dataclasses.Field, value: Any) -> None:
    """UserError unless `value` is one of the field's choices, in its valid range, or a step as it says."""
    choices, valid, step = f.metadata.get("choices"), f.metadata.get("valid"), f.metadata.get("step")
    if isinstance(value, float):
        finite(f.name, value, flag_of(f))
    if choices and value not in choices:
        raise UserError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
    if valid and value is not None:
        test, text = RANGES[valid]
        if not test(value):
            unset = "; leave it out for its default" if f.default is None else ""
            raise UserError(f"{f.name} must be {text}, got {value!r} (--{f.name.replace('_', '-')}){unset}")
    if step == "one":
        steps.check(value, f.name)
    elif step == "list":
        steps.check_list(value, f.name)


def finite(name: str, value: float, flag: str, where: str = "") -> None:
    """UserError unless `value` is a finite number: every float setting passes here (TOML and click
    both read inf and nan)."""
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r} ({flag}" + (f", in {where})" if where
                                                                                    else ")"))


def numbers(text: str, what: str, kind: type = float, at_least: float = 0.0, strict: bool = False) -> list:
    """'0.3,0.6,1.0' -> [0.3, 0.6, 1.0] (ints for kind=int), each a finite number at least `at_least`
    (above it if `strict`), none twice; '' gives []."""
    flag = f" (--{what.replace('_', '-')})" if what.isidentifier() else ""  # a setting's name: its flag
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            value = None
        if value is not None and not math.isfinite(value):
            raise UserError(f"{what} must be a finite number, got {part!r} in {text!r}{flag}")
        if value is None or value < at_least or (strict and value == at_least):
            unit = "whole numbers" if kind is int else "numbers"
            bound = f" {'>' if strict else '>='} {at_least:g}" if math.isfinite(at_least) else ""
            raise UserError(f"{what} must be comma-separated {unit}{bound}, e.g. "
                            f"'{'1,2' if kind is int else '0.3,0.6'}'; got {text!r}{flag}")
        if value in out:
            raise UserError(f"{what}{flag} lists {part} twice ({text!r}): each value is one run; give it once")
        out.append(value)
    return out


class Settings:
    """Settings in named, frozen sections (`settings.train.lr`). A kind of settings lists its sections
    in `SECTIONS` (name -> dataclass, in order): its own, then those registered with it. A section
    dataclass may have `check(self, settings)`, its rules beyond each field's own (run once every
    section is built), and a static `migrate(table)`, which reads a table recorded by an earlier
    rewind under today's names (`rewind.config.from_record`)."""

    SECTIONS: ClassVar[dict[str, type]] = {}

    def __init__(self, **sections: Any) -> None:
        held = {name: sections.pop(name, None) or cls() for name, cls in self.SECTIONS.items()}
        for name, table in sections.items():  # recorded by a study or executor not loaded in this process
            if not isinstance(table, dict):
                raise TypeError(f"{type(self).__name__} has no section {name!r}")
            held[name] = dict(table)
        object.__setattr__(self, "_sections", held)
        built = [s for s in held.values() if not isinstance(s, dict)]
        for section in built:
            for f in fields(section):
                _check_value(f, getattr(section, f.name))
        self._validate()
        for section in built:
            if hasattr(section, "check"):
                section.check(self)

    def _validate(self) -> None:
        """Rules across this kind's own sections."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._sections[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no section {name!r} (it has {', '.join(self._sections)}; "
                                 "the studies' and executors' sections are there once rewind.studies is "
                                 "imported)") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to {name}: settings are frozen (use with_values)")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._sections.items())})"

    def sections(self) -> list[Any]:
        """The sections held, in order (a dict for one recorded by an owner not loaded here)."""
        return list(self._sections.values())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dict(s) if isinstance(s, dict) else dataclasses.asdict(s) for name, s in self._sections.items()}

    def with_values(self, **values: Any) -> Any:
        """A copy with fields replaced by name (`lr=0.05`), whatever section they live in."""
        return type(self).from_sections(self.to_dict(), values, keep_unknown=True)

    @classmethod
    def fields(cls) -> dict[str, tuple[str, dataclasses.Field]]:
        """Every field name -> (section, field), of every section of this kind."""
        return {f.name: (section, f) for section, c in cls.SECTIONS.items() for f in fields(c)}

    @classmethod
    def from_sections(cls, sections: dict[str, Any], overrides: dict[str, Any] | None = None, where: str = "config",
                      keep_unknown: bool = False) -> Any:
        """Settings from `{section: {key: value}}` plus flat `overrides` (CLI flags win). `keep_unknown`:
        a section this kind does not have (recorded by an owner not loaded here) is kept as it is."""
        known = cls.fields()
        values: dict[str, dict[str, Any]] = {s: {} for s in cls.SECTIONS}
        kept = {}
        for section, table in sections.items():
            if section not in cls.SECTIONS and keep_unknown and isinstance(table, dict):
                kept[section] = table
                continue
            if section not in cls.SECTIONS:
                raise _unknown(section, list(cls.SECTIONS), where)
            if not isinstance(table, dict):
                raise UserError(f"[{section}] in {where} must be a table of key = value lines")
            own = [f.name for f in fields(cls.SECTIONS[section])]
            for key, value in table.items():
                if key not in own:
                    raise _unknown(f"{section}.{key}", [f"{s}.{k}" for k, (s, _) in known.items()], where)
                values[section][key] = _coerce(f"{section}.{key}", known[key][1], value, where)
        for key, value in (overrides or {}).items():
            if key not in known:
                raise _unknown(key, list(known), "options")
            section, f = known[key]
            values[section][key] = _coerce(key, f, value, "options")
        return cls(**{s: c(**values[s]) for s, c in cls.SECTIONS.items()}, **kept)

    @classmethod
    def load(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> Any:
        """Defaults, then the TOML file (if any), then `overrides`."""
        return cls.from_sections(read_toml(path), overrides, where=str(path) if path else "config")


def register(kind: type[Settings], name: str, cls: type, after: str | None = None) -> None:
    """Make dataclass `cls` the section `name` of `kind` (placed after section `after`, else last): its
    fields become TOML keys of `[name]`, flags and --help lines, and every settings of `kind` holds it."""
    if kind.SECTIONS.get(name) is cls:
        return
    clash = {f.name for f in fields(cls)} & set(kind.fields())
    if name in kind.SECTIONS or clash:
        raise ValueError(f"section {name!r} of {kind.__name__} clashes with one registered before ({clash or name})")
    items = list(kind.SECTIONS.items())
    at = len(items) if after is None else [n for n, _ in items].index(after) + 1
    kind.SECTIONS = dict(items[:at] + [(name, cls)] + items[at:])


def base_type(f: dataclasses.Field) -> str:
    """'str', 'int', 'float' or 'bool': a field's type, without the `| None` of optional ones."""
    return str(f.type).removesuffix(" | None")


def _coerce(name: str, f: dataclasses.Field, value: Any, where: str) -> Any:
    if value is None and str(f.type).endswith("| None"):
        return None  # optional: the optimizer's (or phase's) default
    want = {"str": str, "int": int, "float": float, "bool": bool}[base_type(f)]
    if want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        finite(f.name, value, flag_of(f), "" if where == "options" else where)
        return float(value)
    if want is str and isinstance(value, (int, float, list)) and not isinstance(value, bool):
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise UserError(f"{name} in {where} must be {want.__name__}, got {value!r}")
    return value


def _unknown(key: str, known: list[str], where: str) -> UserError:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(known))}"
    if "." not in key and not near:  # a section: a study's or executor's registers once rewind.studies is loaded
        hint += " (in Python, `import rewind.studies` first for the studies' sections: imp, critical, warm, study, launch)"
    return UserError(f"unknown config key {key!r} in {where}{hint}")


def read_toml(path: str | Path | None) -> dict[str, Any]:
    """The tables of the TOML file at `path` ({} for none); UserError if it is missing or not TOML."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist; see configs/ for the shipped recipes")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML: {e}") from None


def given(path: str | Path | None, overrides: dict[str, Any]) -> set[str]:
    """The field names the TOML file or `overrides` set: what the user asked for, defaults aside."""
    return {key for table in read_toml(path).values() if isinstance(table, dict) for key in table} | set(overrides)


def to_toml(settings: Settings | dict[str, Any]) -> str:
    """TOML text of settings (or of a manifest's recorded settings: top-level values first, then tables)."""
    d = settings if isinstance(settings, dict) else settings.to_dict()
    lines = [f"{key} = {json.dumps(value)}" for key, value in d.items() if not isinstance(value, dict)
             and value is not None]
    lines += [""] if lines else []
    for section, table in ((k, v) for k, v in d.items() if isinstance(v, dict)):
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is not None:  # an optional field left to its default (TOML has no null)
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)
