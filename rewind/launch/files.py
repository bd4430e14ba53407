"""The files of a study's `launch/` folder, each written whole (atomically) and read back through one
validating reader per kind:

- `study.json`: which plan was launched last into the folder (`{"plan": "plan-<hash>.json"}`);
- `plan-<hash>.json`: a plan (its jobs, the study's settings), what every job reads;
- `jobs.json`: what was sent where, one record per job, keyed by the job's identity (`Job.key`);
- `state/<key>.json`: written by the job itself (running, finished, failed; its attempt).

A file that is not JSON, or JSON of the wrong shape, is one line naming it, saying what is wrong and
how to recover (`Damaged`, a UserError). Running the study's command again rewrites them: it first
sets damaged ones aside (`repair`), so nothing a user can do to these files stops a study.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rewind.archive.atomic import write_text
from rewind.errors import UserError

RECOVER = "run the study's command again to rewrite it"
STUDIES = ("imp", "critical", "stability", "stats", "plasticity", "linear")
# The modules a plan may name as the one that trains it: the studies, and `rewind reproduce`'s plans.
PLAN_MODULES = (*(f"rewind.studies.{s}" for s in STUDIES), "rewind.reproduce.run")
STATES = ("running", "finished", "failed")


class Damaged(UserError):
    """A launch file that cannot be used as it is; the study's command sets it aside and rewrites it."""

    def __init__(self, path: Path, what: str, wrong: str):
        super().__init__(f"{what} {path} {wrong}; {RECOVER}")
        self.path, self.wrong = path, wrong


def _load(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise Damaged(path, what, "is not text") from None
    except OSError as e:
        raise Damaged(path, what, f"cannot be read ({e.strerror})") from None
    try:
        return json.loads(text)
    except ValueError as e:
        where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise Damaged(path, what, f"is not JSON ({getattr(e, 'msg', e)}{where})") from None


def _kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check(data: Any, fields: dict[str, Any], path: Path, what: str, required: tuple[str, ...] = ()) -> dict:
    """`data` must be an object whose `fields` have these types (a list's item type as `[type]`)."""
    if not isinstance(data, dict):
        raise Damaged(path, what, f"holds a JSON {type(data).__name__.replace('dict', 'object')}, not an object")
    missing = [k for k in required if k not in data]
    if missing:
        raise Damaged(path, what, f"lacks {', '.join(repr(k) for k in missing)}")
    for key, kind in fields.items():
        if key not in data:
            continue
        value = data[key]
        ok = (isinstance(value, list) and all(_kind(v, kind[0]) for v in value)) if isinstance(kind, list) \
            else _kind(value, kind)
        if not ok:
            name = f"a list of {kind[0].__name__}" if isinstance(kind, list) else getattr(kind, "__name__", "")
            raise Damaged(path, what, f"has {key!r} = {json.dumps(value)[:40]}, not {name}")
    return data


def folder(out: str | Path) -> Path:
    return Path(out) / "launch"


# --- study.json and plan-<hash>.json ---------------------------------------------------------------------

JOB_FIELDS = {"name": str, "path": str, "describe": str, "args": dict, "after": [str], "levels": int,
              "marker": str, "more": [str], "expect": [list], "holds": [int]}
PLAN_FIELDS = {"study": str, "out": str, "config": dict, "jobs": list, "summary": dict, "command": str}


def read_plan(path: str | Path):
    """The plan in `path` (a `launch/plan-<hash>.json`)."""
    from rewind.launch.plan import Plan

    path, what = Path(path), "the study plan"
    if not path.exists():
        raise Damaged(path, what, "does not exist")
    d = _check(_load(path, what), PLAN_FIELDS, path, what, required=("study", "out", "config", "jobs"))
    if d["study"] not in PLAN_MODULES:
        raise Damaged(path, what, f"names no study of rewind ({d['study']!r})")
    for j in d["jobs"]:
        _check(j, JOB_FIELDS, path, what, required=("name", "path", "describe"))
        if any(len(e) != 3 or not isinstance(e[0], str) or not isinstance(e[2], dict) for e in j.get("expect", ())):
            raise Damaged(path, what, f"has a job {j['name']!r} whose 'expect' is not (folder, kind, identity)")
    plan = Plan.from_dict({**d, "jobs": [{k: v for k, v in j.items() if k in JOB_FIELDS} for j in d["jobs"]]})
    names = [j.name for j in plan.jobs]
    if len(set(names)) != len(names) or any(a not in names for j in plan.jobs for a in j.after):
        raise Damaged(path, what, "has jobs whose names repeat or that wait for jobs it does not hold")
    return plan


def latest_plan(out: str | Path):
    """The plan last launched into the study folder `out`, or None."""
    path, what = folder(out) / "study.json", "the study's pointer to its plan"
    if not path.exists():
        return None
    d = _check(_load(path, what), {"plan": str}, path, what, required=("plan",))
    name = d["plan"]
    if "/" in name or not (name.startswith("plan-") and name.endswith(".json")):
        raise Damaged(path, what, f"names no plan file ({name!r})")
    return read_plan(path.parent / name)


# --- jobs.json -----------------------------------------------------------------------------------------

RECORD_FIELDS = {"name": str, "executor": str, "job_id": str, "stderr": str, "folder": str, "driver_pid": int,
                 "host": str, "submitted": str}


def read_records(out: str | Path) -> dict[str, dict[str, Any]]:
    """Job identity -> what was sent where (executor, job id, log)."""
    path, what = folder(out) / "jobs.json", "the job records"
    if not path.exists():
        return {}
    table = _load(path, what)
    if not isinstance(table, dict):
        raise Damaged(path, what, f"holds a JSON {type(table).__name__}, not an object")
    for entry in table.values():
        _check(entry, RECORD_FIELDS, path, what, required=("name", "executor", "job_id"))
        if entry["executor"] not in ("local", "slurm"):
            raise Damaged(path, what, f"names an unknown executor {entry['executor']!r}")
    return table


def write_records(out: str | Path, table: dict[str, dict[str, Any]]) -> None:
    write_text(folder(out) / "jobs.json", json.dumps(table, indent=1, sort_keys=True))


# --- state/<key>.json ----------------------------------------------------------------------------------

STATE_FIELDS = {"state": str, "pid": int, "host": str, "attempt": int, "last_line": str, "time": str,
                "started": (int, float), "progress": int, "job_id": str}


def state_path(out: str | Path, key: str) -> Path:
    return folder(out) / "state" / f"{key}.json"


def read_state(out: str | Path, key: str) -> dict[str, Any]:
    """What the job itself last wrote ({} before it starts)."""
    path, what = state_path(out, key), "the job's state file"
    if not path.exists():
        return {}
    d = _check(_load(path, what), STATE_FIELDS, path, what, required=("state", "pid", "host", "attempt"))
    if d["state"] not in STATES:
        raise Damaged(path, what, f"holds an unknown state {d['state']!r}")
    return d


def write_state(out: str | Path, key: str, data: dict[str, Any]) -> None:
    write_text(state_path(out, key), json.dumps(data))


# --- repair --------------------------------------------------------------------------------------------

def repair(out: str | Path, say: Callable[[str], None]) -> None:
    """Set aside every damaged launch file of the study folder `out` (renamed `*.damaged`), saying so in
    one line each: the study's command then writes them anew (a plan, its pointer) or takes their jobs
    as never submitted (records) or not yet started (state files)."""
    launch = folder(out)
    if not launch.is_dir():
        return
    checks: list[tuple[Path, Callable[[], Any]]] = [(launch / "study.json", lambda: latest_plan(out)),
                                                    (launch / "jobs.json", lambda: read_records(out))]
    checks += [(p, lambda p=p: read_plan(p)) for p in sorted(launch.glob("plan-*.json"))]
    checks += [(p, lambda p=p: read_state(out, p.stem)) for p in sorted((launch / "state").glob("*.json"))]
    for path, read in checks:
        if not path.exists():  # set aside already (a plan the pointer names)
            continue
        try:
            read()
        except Damaged as e:
            bad = e.path if e.path.exists() else path  # a pointer to a missing plan: the pointer
            aside = bad.with_name(bad.name + ".damaged")
            bad.replace(aside)
            then = ("its jobs are sent again (a copy still queued finds its run complete, or locked, and stops)"
                    if bad.name == "jobs.json" else "written anew")
            say(f"{bad} {e.wrong}: set aside as {aside.name}; {then}")
