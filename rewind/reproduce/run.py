"""`rewind reproduce` as a study: `plan` (every sweep the figures asked for need, each once, as a job
of the launcher), `execute` (one sweep: `rewind.studies.linear` trains it) and `summarize` (every
figure drawn from its sweeps' tables, and `--out/README.md`).

Layout of `--out`: `runs/<root>/` the sweeps' archives (one folder per root, see `figure.Request`),
`<figure>.png` and `<figure>.csv` per figure, `README.md` listing each figure with its command, its
settings and its headline number (`figures.json` keeps them across commands that draw some only).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from pathlib import Path
from typing import Any

from rewind import launch
from rewind.archive.atomic import write_json, write_text
from rewind.errors import UserError
from rewind.linear import config as linear_config
from rewind.reproduce import config as rconfig
from rewind.reproduce import papers
from rewind.reproduce.figure import Drawing, Figure, Request
from rewind.studies import linear as linear_study

INDEX = "figures.json"


def select(paper: str, names: list[str]) -> list[Figure]:
    """The paper's figures named (all of them when none is), in the paper's order."""
    figures = papers.figures(paper)
    by_name = {f.name: f for f in figures}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"{paper} has no figure {unknown[0]!r}; its figures: {', '.join(by_name)} "
                        f"(`rewind reproduce --list`)")
    return [f for f in figures if not names or f.name in names]


def _study_of(request: Request, settings: rconfig.ReproduceStudy):
    """The request's study settings: its own, the command's seeds and runtime, no figures of its own."""
    overrides = {**request.settings, "seeds": ",".join(map(str, settings.reproduce.seed_list())),
                 **{k: v for k, v in settings.runtime.__dict__.items() if k != "figures"}, "figures": False}
    load = linear_config.load_pathways if request.kind == "pathways" else linear_config.load_completion
    return load(None, overrides)


def _sub_plan(request: Request, study, out: Path) -> launch.Plan:
    return linear_study.plan(request.kind, study, out / "runs" / request.root, write=False)


def _key(request: Request) -> str:
    text = json.dumps([request.kind, request.root, request.settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def plan(paper: str, names: list[str], settings: rconfig.ReproduceStudy, out: str | Path) -> launch.Plan:
    """One job per distinct sweep of the figures asked for; a job waits for the one before it in its root."""
    out = Path(out)
    figures = select(paper, names)
    jobs: dict[str, launch.Job] = {}
    last_in_root: dict[str, str] = {}
    users: dict[str, list[str]] = {}
    for figure in figures:
        for request in figure.requests(settings.reproduce.scale):
            name = f"{request.root}/{request.label or _key(request)}"
            users.setdefault(name, []).append(figure.name)
            if name in jobs:
                continue
            study = _study_of(request, settings)
            sub = _sub_plan(request, study, out)
            after = (last_in_root[request.root],) if request.root in last_in_root else ()
            jobs[name] = launch.Job(name, sub.out, sub.jobs[0].describe, {"request": _request_dict(request)},
                                    after=after, marker=sub.jobs[0].marker)
            last_in_root[request.root] = name
    described = tuple(launch.Job(j.name, j.path, f"{j.describe} (for {', '.join(users[j.name])})", j.args, j.after,
                                 marker=j.marker) for j in jobs.values())
    return launch.Plan("rewind.reproduce.run", str(out), settings.to_dict(), described,
                       {"paper": paper, "figures": [f.name for f in figures]})


def _request_dict(request: Request) -> dict[str, Any]:
    return {"kind": request.kind, "root": request.root, "settings": request.settings, "label": request.label}


def describe(plan: launch.Plan) -> str:
    """--dry-run: every sweep and its state, then the figures drawn from them."""
    figures = select(plan.summary["paper"], plan.summary["figures"])
    lines = [launch.describe(plan), f"then draws {len(figures)} figures into {plan.out}:"]
    scale = plan.config["reproduce"]["scale"]
    for f in figures:
        needs = ", ".join(sorted({r.root for r in f.requests(scale)})) or "analytical, no runs"
        lines.append(f"  {f.name}: {f.title} ({f.paper}) [from {needs}]")
    return "\n".join(lines)


def execute(plan: launch.Plan, job: launch.Job) -> None:
    """Train one sweep (what the archives do not hold complete)."""
    request = Request(**job.args["request"])
    settings = rconfig.from_dict(plan.config)
    sub = _sub_plan(request, _study_of(request, settings), Path(plan.out))
    linear_study.execute(sub, sub.jobs[0])  # its marker: written by studies.common.execute


def summarize(plan: launch.Plan) -> dict[str, str]:
    """Draw every figure of the plan; {figure: headline}. Each sweep's tables are read once."""
    settings = rconfig.from_dict(plan.config)
    out, r = Path(plan.out), settings.reproduce
    tables: dict[str, Any] = {}
    headlines = {}
    for figure in select(plan.summary["paper"], plan.summary["figures"]):
        drawing = Drawing(figure, r.scale, r.seed_list(), r.reference, out / f"{figure.name}.png",
                          out / f"{figure.name}.csv")
        for request in figure.requests(r.scale):
            study = _study_of(request, settings)
            key = _key(request)
            if key not in tables:
                sub = _sub_plan(request, study, out)
                tables[key] = linear_study.summarize(sub)
            drawing.tables.append(tables[key])
            drawing.studies.append(study)
        headlines[figure.name] = figure.draw(drawing)
        _record(out, plan, figure, settings, headlines[figure.name])
    _write_readme(out, plan.summary["paper"])
    return headlines


def _command(paper: str, figure: str, settings: rconfig.ReproduceStudy, out: Path) -> str:
    """The command that makes `figure` alone with these settings."""
    r = settings.reproduce
    words = ["rewind", "reproduce", paper, figure, "--scale", r.scale, "--seeds", ",".join(map(str, r.seed_list()))]
    if r.reference:
        words.append("--reference")
    return " ".join(shlex.quote(w) for w in [*words, "--out", str(out)])


def _record(out: Path, plan: launch.Plan, figure: Figure, settings: rconfig.ReproduceStudy, headline: str) -> None:
    index = _index(out)
    r = settings.reproduce
    index[figure.name] = {
        "title": figure.title, "paper": figure.paper, "png": f"{figure.name}.png", "csv": f"{figure.name}.csv",
        "command": _command(plan.summary["paper"], figure.name, settings, out), "scale": r.scale,
        "seeds": r.seed_list(), "reference": r.reference, "headline": headline, "drawn": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": [f"{q.kind} in runs/{q.root}: " + (", ".join(f"{k} {v}" for k, v in q.settings.items()) or
                                                        "the defaults") for q in figure.requests(r.scale)]}
    write_json(out / INDEX, index)


def stale(plan: launch.Plan) -> bool:
    """True when every sweep of the plan is complete and a figure of it is not drawn with its settings
    (scale, seeds, --reference): an executor's last job draws the figures, so a command that only
    changes how they are drawn finds nothing to train and has them drawn by `summarize` here."""
    if launch.pending(plan):
        return False
    r = rconfig.from_dict(plan.config).reproduce
    index = _index(Path(plan.out))
    now = {"scale": r.scale, "seeds": r.seed_list(), "reference": r.reference}
    return any({k: index.get(name, {}).get(k) for k in now} != now for name in plan.summary["figures"])


def drawn(out: str | Path) -> dict[str, Any]:
    """The figures drawn into `out` so far: {name: their README entry}."""
    return _index(Path(out))


def _index(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / INDEX).read_text())
    except (OSError, ValueError):
        return {}


def _write_readme(out: Path, paper: str) -> None:
    index = _index(out)
    order = [f.name for f in papers.figures(paper)]
    lines = [f"# {papers.title(paper)}: figures reproduced by rewind", "",
             "Each figure: its PNG, the CSV of the numbers drawn (`series` rewind or reference, with the "
             "reference's `source`), the command that makes it alone, its settings and its headline number.", ""]
    for name in sorted(index, key=lambda n: order.index(n) if n in order else len(order)):
        e = index[name]
        lines += [f"## {name}: {e['title']}", "", f"- in the paper: {e['paper']}",
                  f"- files: `{e['png']}`, `{e['csv']}`", f"- command: `{e['command']}`",
                  f"- scale {e['scale']}, seeds {','.join(map(str, e['seeds']))}; drawn {e['drawn']}",
                  *[f"- runs: {s}" for s in e["settings"]], f"- headline: {e['headline']}", ""]
    write_text(out / "README.md", "\n".join(lines))
