"""The `rewind` command: parse, call, print. Every option comes from the settings dataclasses.

Importing this module loads no torch, pandas or matplotlib (a command imports what it runs once its
settings are checked), so `--help` and a refused setting answer at once.

Over 400 lines, and one idea: the command line, every command's options, examples and output in
one place, as `rewind --help` lists them; each command is a few lines that call a study."""

from __future__ import annotations

import dataclasses
import errno
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import click

import rewind.studies  # noqa: F401  (every study's and executor's settings section, registered)
from rewind import config as cfg
from rewind.errors import UserError
from rewind.launch.settings import LaunchConfig
from rewind.linear import config as linear_config
from rewind.reproduce import config as reproduce_config
from rewind.settings import Settings, flag_of
from rewind.studies.plasticity_settings import settle_recipe

_TYPES = {"int": click.INT, "float": click.FLOAT, "str": click.STRING}
# The unit of every step setting (`rewind.steps`).
STEP_UNIT = "Unit: iterations '500it' or epochs '2ep' (a bare number: iterations)."


TRUNK_SECTIONS = ("data", "model", "train", "pretrain", "runtime", "launch")
IMP_SECTIONS = ("data", "model", "train", "pretrain", "imp", "study", "runtime", "launch")  # no other study's


def dry_run_option(fn: Callable) -> Callable:
    return click.option("--dry-run", is_flag=True, default=False,
                        help="print the runs this command would train or reuse (with their lengths and what the "
                             "archive already holds) and exit without writing anything  [default: off]")(fn)


def launched(launch_config: LaunchConfig, make_plan: Callable[[], Any], dry_run: bool) -> bool:
    """Print the plan (--dry-run) or send it to the executor (local, slurm): True when done here;
    False: the command trains inline as usual."""
    from rewind import launch
    from rewind.studies import common

    if dry_run:
        click.echo(launch.describe(make_plan()))
        return True
    if launch_config.executor == "inline":
        return False
    common.submit(make_plan(), launch_config, click.echo)
    return True


def config_options(sections: tuple[str, ...], with_file: bool = True, kind: type[Settings] = cfg.Config,
                   leave_out: tuple[str, ...] = ()) -> Callable:
    def decorate(fn: Callable) -> Callable:
        return _config_options(fn, sections, with_file, kind, leave_out)

    return decorate


def _config_options(fn: Callable, sections: tuple[str, ...], with_file: bool, kind: type[Settings],
                    leave_out: tuple[str, ...] = ()) -> Callable:
    """Add `--config FILE` and one option per field of `sections` (of settings `kind`; none for the
    fields `leave_out` names); unset options stay None (the file wins)."""
    for name, (section, f) in reversed(list(kind.fields().items())):
        if section not in sections or name in leave_out:
            continue
        flag = flag_of(f)
        default = "see above" if f.default is None else repr(f.default)
        unit = f". {STEP_UNIT}" if f.metadata.get("step") else ""
        help_text = f"{f.metadata['help']}{unit}  [default: {default}] [{section}.{name}]"
        if f.type == "bool":
            fn = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)(fn)
        else:
            kind = click.Choice(f.metadata["choices"]) if f.metadata.get("choices") else _TYPES[cfg.base_type(f)]
            fn = click.option(flag, name, type=kind, default=None, help=help_text)(fn)
    if not with_file:
        return fn
    return click.option("--config", "config_file", type=click.Path(dir_okay=False),
                        help="TOML config (see configs/); any option given here overrides it  [default: none]")(fn)


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line (click leaves the others None)."""
    return {k: v for k, v in options.items() if v is not None}


def build_config(config_file: str | None, options: dict[str, Any]) -> cfg.Config:
    return cfg.load(config_file, given(options))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="rewind")
def cli() -> None:
    """rewind: lottery tickets, rewinding and the early phase of training."""


def _say_pretrain(config: cfg.Config, config_file: str | None, options: dict[str, Any]) -> None:
    """The first line of a run that pre-trains: the pre-training it starts, and its length."""
    if config.pretrain.pretrain != "none":
        defaulted = "pretrain_steps" not in cfg.given(config_file, given(options))
        click.echo(config.pretrain.describe(defaulted=defaulted))


@cli.command()
@config_options(TRUNK_SECTIONS)
@dry_run_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="archive folder, e.g. runs/NAME")
def train(config_file: str | None, out: str, dry_run: bool, **options: Any) -> None:
    """Train a dense run (the trunk) into an archive; re-running the same command resumes it."""
    config = build_config(config_file, options)
    from rewind.studies.imp import trunk_plan
    from rewind.train.trunk import train as train_trunk

    _say_pretrain(config, config_file, options)
    if launched(config.launch, lambda: trunk_plan(config, out), dry_run):
        return
    result = train_trunk(config, out)
    acc = result.final_test["acc"]
    click.echo(f"trunk {out}: final test accuracy {100 * acc:.2f}% (best {100 * result.best_test_acc:.2f}%)")


@cli.command()
@config_options(IMP_SECTIONS)
@dry_run_option
@click.option("--out", type=click.Path(file_okay=False),
              help="train a trunk into this archive first, e.g. runs/NAME (or give --from)  [default: none]")
@click.option("--from", "from_", type=click.Path(file_okay=False),
              help="reuse this trunk archive (never retrained) with its own settings: a training setting given "
                   "(command line or --config: --lr, --precision, ...) that trains differently from the trunk is "
                   "refused (steps compare as iterations); --eval-every, --log-every, --save-every, --save-at and the "
                   "statistics options apply to the branches, and --data may name the trunk's dataset at another "
                   "path  [default: none]")
def imp(config_file: str | None, out: str | None, from_: str | None, dry_run: bool, **options: Any) -> None:
    """Iterative magnitude pruning with rewinding; branches live under the trunk's archive.

    \b
    rewind imp --config configs/smoke.toml --levels 3 --rewind-iter 50 --out runs/smoke
    rewind imp --from runs/smoke --rewind-iter 100 --levels 3     # same trunk, another k
    rewind imp --from runs/smoke --rewind-iter 0,20,100 --parallel 3   # a rewind-point sweep
    """
    config = build_config(config_file, options)
    from rewind.studies.imp import plan, run

    asked = cfg.given(config_file, given(options))
    if from_ is None:  # with --from the trunk, and its pre-training, exist
        _say_pretrain(config, config_file, options)
    if launched(config.launch, lambda: plan(config, out=out, from_=from_, given=asked), dry_run):
        return
    results = run(config, out=out, from_=from_, given=asked)
    for r in results:
        click.echo(f"branch {r.branch}")
        click.echo(_table([{"level": row["level"], "density": f"{100 * row['density']:.1f}%",
                            "test_acc": f"{100 * row['final_test_acc']:.2f}%",
                            "best": f"{100 * row['best_test_acc']:.2f}%"} for row in r.rows]))
    if config.study.replicates > 1:
        click.echo(f"summary over {config.study.replicates} replicates: {Path(out) / 'results.csv'}")
    elif (table := results[0].trunk / "trunk" / "analysis" / "imp_results.csv").exists():
        click.echo(f"every IMP branch of this trunk: {table}")


@cli.command("critical-period")
@config_options(("data", "model", "train", "critical", "study", "runtime", "launch"))
@dry_run_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="archive folder, e.g. runs/NAME")
def critical_period(config_file: str | None, out: str, dry_run: bool, **options: Any) -> None:
    """Critical-period sweep: final accuracy against the switch point t (or window start).

    \b
    rewind critical-period --deficit blur --switch-at 0,20,40,60,80ep --after 160ep --out runs/cp
    rewind critical-period --deficit blur --window 40ep --starts 0,20,40ep --after 80ep --out runs/cpw
    # weight decay on until t, then off, every arm 160 epochs in all (Golatkar et al.):
    rewind critical-period --deficit no-weight-decay --direction normal-then-deficit --switch-at 0,10,20ep \\
        --total-steps 160ep --out runs/wd
    """
    config = build_config(config_file, options)
    from rewind.studies.critical import plan, run

    if launched(config.launch, lambda: plan(config, out), dry_run):
        return
    summary = run(config, out)
    click.echo(_table([{k: (f"{100 * v:.2f}%" if "acc" in k and v == v else v) for k, v in row.items()}
                       for row in summary.to_dict("records")]))
    click.echo(f"results: {Path(out) / 'results.csv'}, plot: {Path(out) / 'results.png'}")


@cli.command("warm-start")
@config_options(("data", "model", "train", "warm", "study", "runtime", "launch"))
@dry_run_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="archive folder, e.g. runs/NAME")
def warm_start(config_file: str | None, out: str, dry_run: bool, **options: Any) -> None:
    """Warm starting: train on a subset, then on all data from those weights (as is, shrink-perturbed,
    or with layers reset), compared with training from scratch; --study sweeps one question.

    \b
    rewind warm-start --config configs/smoke.toml --second-steps 200it --out runs/ws            # the four arms
    rewind warm-start --config configs/smoke.toml --study length --first-steps 0,50,200it --out runs/ws
    rewind warm-start --config configs/smoke.toml --study shrink --shrink 0.3,1.0 --perturb-sigma 0,0.01 --out runs/ws
    """
    config = settle_recipe(build_config(config_file, options), config_file, set(given(options)))
    from rewind.studies.plasticity import plan, run

    if launched(config.launch, lambda: plan(config, out), dry_run):
        return
    table = run(config, out)
    metrics = ("final_test_acc", "mean_last_test_acc", "gap_to_scratch")
    hidden = {"study", "branch", "best_test_acc", "mean_last_gap_to_scratch", "first_epochs"}
    rows = [{k: (f"{100 * v:+.2f}" if k.startswith("gap") else f"{100 * v:.2f}%") if k in metrics else v
             for k, v in r.items() if k not in hidden and not k.endswith("_std") and not k.startswith("best")}
            for r in table.to_dict("records")]
    click.echo(_table([{k: ("-" if v is None or (isinstance(v, float) and v != v) else v) for k, v in r.items()}
                       for r in rows]))
    click.echo(f"results: {Path(out) / 'results.csv'}, plot: {Path(out) / 'results.png'}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@config_options(("runtime", "launch"), with_file=False)
@dry_run_option
def stats(run: str, dry_run: bool, **options: Any) -> None:
    """Early-phase statistics of every checkpoint of a trunk, and the overlap of its IMP masks."""
    runtime, launch_settings = _split_launch(options)
    launch_config = LaunchConfig(**launch_settings)
    from rewind.studies.stats import plan as stats_plan
    from rewind.studies.stats import stats as run_stats

    if launched(launch_config, lambda: stats_plan(run, runtime, launch_settings), dry_run):
        return
    for name, path in run_stats(run, overrides=runtime).items():
        click.echo(f"{name}: {path}")


@cli.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--at", required=True, help=f"rewind iterations k, comma-separated, e.g. '0,100,500,2ep'. {STEP_UNIT}")
@click.option("--points", default=30, show_default=True, type=click.IntRange(min=2),
              help="evenly spaced points on the linear path, endpoints included (30 in Frankle et al. 2020)")
@click.option("--noise", type=click.Choice(("order-and-augmentation", "order-only")),
              default="order-and-augmentation", show_default=True,
              help="SGD noise between the two children: their own data order and augmentation seeds (Frankle "
                   "et al. 2020), or their own data order only (the trunk's augmentation); the children take order "
                   "seeds 1 and 2 (with order-and-augmentation, augmentation seeds 1 and 2 too)")
@click.option("--bn", type=click.Choice(("recompute", "interpolate")), default="recompute", show_default=True,
              help="BatchNorm at each point: recompute: running statistics recomputed for the interpolated weights "
                   "on the trunk's first 40 training batches, the same at every point (rewind's choice: "
                   "interpolated statistics do not describe the interpolated network); interpolate: interpolated "
                   "with the weights")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(min=1),
              help="train up to this many children together on one device (replica trainer); those of "
                   "later k join as the others reach k")
@config_options(("runtime", "launch"), with_file=False)
@dry_run_option
def stability(run: str, at: str, points: int, noise: str, bn: str, parallel: int, dry_run: bool,
              **options: Any) -> None:
    """Linear mode connectivity: train two children from each k, report the error barrier between them."""
    runtime, launch_settings = _split_launch(options)
    launch_config = LaunchConfig(**launch_settings)
    from rewind.studies.stability import plan as stability_plan
    from rewind.studies.stability import stability as run_stability

    if launched(launch_config,
                lambda: stability_plan(run, at, points, noise, bn, runtime, parallel, launch_settings), dry_run):
        return
    table = run_stability(run, at, points, noise=noise, bn=bn, overrides=runtime, parallel=parallel)
    click.echo(_table([{"k": r["k"], "noise": r["noise"], "bn": r["bn"], "barrier": f"{100 * r['barrier']:.2f}%"}
                       for r in table.to_dict("records")]))
    click.echo(f"table: {Path(run) / 'trunk' / 'analysis' / 'instability.csv'}")


@cli.group()
def linear() -> None:
    """Critical periods in deep linear networks (Kleinman, Achille, Soatto, ICLR 2024)."""


@linear.command("pathways")
@config_options(tuple(linear_config.PathwaysStudy.SECTIONS), kind=linear_config.PathwaysStudy)
@dry_run_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="study folder, e.g. runs/dln")
def linear_pathways(config_file: str | None, out: str, dry_run: bool, **options: Any) -> None:
    """Two pathways on the hierarchical task, pathway b gated over a window: one deficit-free trunk per
    depth and seed, one branch per onset; simulated singular values beside the analytical solution.

    \b
    rewind linear pathways --depth 2,3,4 --deficit-start 0,400,750 --deficit-length 150 --out runs/dln
    rewind linear pathways --config configs/linear_pathways.toml --out runs/dln   # 3 seeds
    """
    study = linear_config.load_pathways(config_file, given(options))
    import pandas as pd

    from rewind.linear import pathways
    from rewind.studies.linear import plan

    if launched(study.launch, lambda: plan("pathways", study, out), dry_run):
        return
    s = pathways.run(study, out).summary
    click.echo(_table([{"depth": r["depth"], "deficit": "none" if pd.isna(r["deficit_start"]) else
                        f"{r['deficit_start']}-{r['deficit_start'] + r['deficit_length']}",
                        "gated share": f"{r['gated_share']:.3f}", "strongest mode": f"{r['strong_mode_share']:.3f}",
                        "max |sim - ODE| / S": f"{r['ode_gap']:.1e}"} for r in s.to_dict("records")]))
    _outputs(out, study.runtime.figures, "pathways_singular_values.png, pathways_share.png")


@linear.command("completion")
@config_options(tuple(linear_config.CompletionStudy.SECTIONS), kind=linear_config.CompletionStudy)
@dry_run_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="study folder, e.g. runs/mc")
def linear_completion(config_file: str | None, out: str, dry_run: bool, **options: Any) -> None:
    """Matrix completion: task 1 for T_c steps (one trunk per depth and seed), then task 2 (one branch per
    T_c); final task-2 error against T_c per depth.

    \b
    rewind linear completion --depth 1,2,3 --pretrain-steps 0,1k,5k,10k,20k,40k,60k,80k,100k --out runs/mc
    rewind linear completion --config configs/linear_completion.toml --out runs/mc   # 3 seeds
    """
    study = linear_config.load_completion(config_file, given(options))
    from rewind.linear import completion
    from rewind.studies.linear import plan

    if launched(study.launch, lambda: plan("completion", study, out), dry_run):
        return
    s = completion.run(study, out).summary
    several = s.seeds.max() > 1
    s = s.assign(cell=[f"{m:.4f} ± {sd:.4f}" if several else f"{m:.4f}" for m, sd in zip(s.task2_error,
                                                                                       s.task2_error_std)])
    tags = completion.swept(study.completion)
    s["arm"] = [f"D={r.depth}" + completion.Variant(*(r[k] for k in completion.VARIANT_COLUMNS)).tag(tags)
                for _, r in s.iterrows()]
    pivot = s.pivot(index="pretrain_steps", columns="arm", values="cell")[list(dict.fromkeys(s.arm))]
    click.echo(_table([{"T_c": t, **row.to_dict()} for t, row in pivot.iterrows()]))
    click.echo("task-2 error: mean squared error over all entries" +
               (f" (mean ± std over {s.seeds.max()} seeds; min and max in summary.csv)" if several else ""))
    _outputs(out, study.runtime.figures, "completion_error.png, completion_singular_values.png")


def _outputs(out: str, figures: bool, pngs: str) -> None:
    tables = f"tables: {Path(out) / 'results.csv'}, summary.csv, curves.csv"
    click.echo(tables + (f"; figures: {pngs}" if figures else ""))


@cli.command()
@click.argument("paper", required=False)
@click.argument("figures", nargs=-1)
@config_options(tuple(reproduce_config.ReproduceStudy.SECTIONS), kind=reproduce_config.ReproduceStudy,
                leave_out=("figures",))
@dry_run_option
@click.option("--list", "list_", is_flag=True, default=False,
              help="name the papers and figures there are, and exit  [default: off]")
@click.option("--out", type=click.Path(file_okay=False),
              help="folder for the figures (PNG, CSV), README.md and the runs they need (runs/), e.g. runs/paper; "
                   "needed except with --list  [default: none]")
def reproduce(paper: str | None, figures: tuple[str, ...], config_file: str | None, dry_run: bool, list_: bool,
              out: str | None, **options: Any) -> None:
    """A paper's figures, one command: the runs they need (ordinary deep-linear sweeps: archives, resume,
    --dry-run, --executor), each trained once, then per figure FIGURE.png, FIGURE.csv and a README.md.

    \b
    rewind reproduce --list
    rewind reproduce kleinman2024 --out runs/kleinman2024-smoke                    # every figure, smoke scale
    rewind reproduce kleinman2024 fig1 fig3 --scale paper --out runs/kleinman2024
    rewind reproduce kleinman2024 --scale paper --executor local --local-jobs 2 --out runs/kleinman2024
    """
    from rewind.reproduce import papers

    if list_:
        for name in ([paper] if paper else papers.names()):
            click.echo(f"{name}: {papers.title(name)}")
            click.echo(_table([{"figure": f.name, "in the paper": f.paper, "what": f.title}
                               for f in papers.figures(name)]))
        return
    if not paper:
        raise UserError(f"name a paper to reproduce ({', '.join(papers.names())}), or see `rewind reproduce --list`")
    settings = reproduce_config.load(given(options), config_file)
    from rewind.reproduce import run as reproducing

    reproducing.select(paper, list(figures))  # an unknown figure: one line, before anything is written
    if out is None:
        raise UserError("--out is required: the folder for the figures and their runs, e.g. --out runs/kleinman2024")
    if dry_run:
        click.echo(reproducing.describe(reproducing.plan(paper, list(figures), settings, out)))
        return
    plan = reproducing.plan(paper, list(figures), settings, out)
    if not launched(settings.launch, lambda: plan, False):
        from rewind.studies import common

        common.run(plan)
    elif reproducing.stale(plan):
        reproducing.summarize(plan)
    index = reproducing.drawn(out)
    for name in plan.summary["figures"]:
        if name in index:
            click.echo(f"{name}: {index[name]['headline']}")
    click.echo(f"figures, their CSVs and README.md: {out}")


@cli.group()
def runs() -> None:
    """List archives and show what one holds."""


@runs.command("list")
@click.argument("root", required=False, type=click.Path())
def runs_list(root: str | None) -> None:
    """Every archive under ROOT (default runs/)."""
    from rewind.analysis.runs import run_rows

    if root is None and not Path("runs").exists():  # nothing trained here yet; a ROOT given must exist
        click.echo("no archives under runs (it does not exist yet)")
        return
    root = root or "runs"
    rows, unreadable = run_rows(Path(root))
    if rows:
        click.echo(_table(rows))
    elif not unreadable:
        click.echo(f"no archives under {root}")
    for line in unreadable:  # each on its own line, after the rest is listed; then exit status 2
        click.echo(f"rewind: error: {line}", err=True)
    if unreadable:
        sys.exit(2)


@runs.command("show")
@click.argument("run", type=click.Path())
def runs_show(run: str) -> None:
    """Config, status, checkpoints held and test accuracy of one archive."""
    from rewind.analysis.runs import describe
    from rewind.launch import latest_plan, records

    plan = latest_plan(run)
    if plan is not None:
        rows = records.states(plan)
        counts = {s: sum(r["kind"] == s for r in rows) for s in dict.fromkeys(r["kind"] for r in rows)}
        click.echo(f"study {run}: {', '.join(f'{n} {s}' for s, n in counts.items())}")
        click.echo(_table([{k: r[k] for k in ("job", "state", "job_id", "detail")} for r in rows]))
        if not (Path(run) / "manifest.json").exists():
            return
    click.echo(describe(Path(run)))


@runs.command("summarize")
@click.argument("run", type=click.Path())
def runs_summarize(run: str) -> None:
    """Write a study's tables and plots from what its archive holds (after `--executor local|slurm`)."""
    from rewind.launch import latest_plan, pending
    from rewind.studies.common import summarize_if_last

    plan = latest_plan(run)
    if plan is None:
        raise UserError(f"{run} holds no launched study (no launch/study.json); studies run inline write their "
                        "tables themselves")
    if not summarize_if_last(plan):
        missing = [j.name for j in pending(plan)]
        raise UserError(f"{len(missing)} runs of {run} are not complete yet ({', '.join(missing[:5])}"
                        f"{', ...' if len(missing) > 5 else ''}); `rewind runs show {run}` says where they are")
    click.echo(f"summary of {run} written")


def _split_launch(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(runtime settings, launch settings) of the options given."""
    names = {f.name for f in dataclasses.fields(LaunchConfig)}
    chosen = given(options)
    return ({k: v for k, v in chosen.items() if k not in names}, {k: v for k, v in chosen.items() if k in names})


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"rewind: error: {one_line(message)}", err=True)
    sys.exit(code)


def one_line(message: str) -> str:
    """A message as the one line the CLI prints: line breaks folded, no Python object reprs."""
    message = re.sub(r"<[\w.]+ object at 0x[0-9a-fA-F]+>", "the data", message)
    return " ".join(message.split())


def _invoke(args: list[str]) -> Any:
    """Run the command line `args`; click's own handling of Ctrl-C (a blank line first) left out."""
    try:
        with cli.make_context("rewind", args) as ctx:
            return cli.invoke(ctx)
    except click.exceptions.Exit as e:
        return e.exit_code


def main() -> None:
    """The `rewind` command: one line and exit status 2 for what the user can fix, 130 after Ctrl-C
    (the shell's convention for a command stopped by SIGINT). Warnings raised while the command runs
    (torch's, ...) are held back and shown once it succeeds: never before the one line of a refusal."""
    with warnings.catch_warnings(record=True) as held:
        try:
            code = _invoke(sys.argv[1:])
        except UserError as e:
            _fail(str(e))
        except click.ClickException as e:
            _fail(e.format_message())
        except (KeyboardInterrupt, click.exceptions.Abort):
            if sys.stderr.isatty():
                click.echo(err=True)  # ends the terminal's echoed ^C line
            _fail("interrupted; run the same command again to resume where it stopped", 130)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                _fail("disk full; nothing saved earlier was changed. Free some space and run the same command again")
            _fail(f"{e.strerror or e}: {e.filename or ''} (check the path and its permissions)")
        except BaseException:
            _show(held)  # an unexpected error: its traceback follows what was warned before it
            raise
    _show(held)
    sys.exit(code if isinstance(code, int) else 0)


def _show(held: list[warnings.WarningMessage]) -> None:
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


if __name__ == "__main__":
    main()
