"""Kleinman, Achille, Soatto, "Critical Learning Periods Emerge Even in Deep Linear Networks" (ICLR
2024, arXiv 2308.12221): every figure of the paper and of the authors' code
(`mjkleinman/CriticalPeriodDeepLinearNets`), as the sweeps it needs at each scale.

Settings come from the authors' configs and scripts: `multipath/configs/*.yaml` (pathways: depth 4,
onsets 0/400/750 for 150 steps, lr 0.01, 1000 steps, width 100; the lesion: depth 3, mode index 1
(the second), gated 0-200; nonlinear: depth 3), `multipath/phase-*-init.py` (phase portraits),
`matrixcompletion/configs/*.yaml` and `scripts/*.sh` (depth 1-3, rank of task 1 2/5/10/15, 1000-4000
observations, init scale 1e-1 to 1e-4 with 50k task-2 steps, the subset variant: 1000 of
1250-2000 entries, task 1 rank 5) and `analytical_singular_vectors_and_sim.py` (the flow: rank 8
then 2, 5000 entries, depth 3, lr 0.25, identity init, 10k task-2 steps after 0-40k). Figure numbers
are those the authors' READMEs give; the matrix-completion scripts name none, so those figures are
named by what they sweep. The smoke scale keeps every figure's shape at a fraction of the cost
(completion on 40 x 40 matrices; its rank figure on task 2 of rank 3 with 30% of the entries seen,
where a task 1 of lower rank does little harm, as rank 2 before rank 5 at paper scale).
"""

from __future__ import annotations

from types import SimpleNamespace

from rewind.reproduce.figure import Drawing, Figure, Request

PAPER_TC = "0,1k,5k,10k,20k,40k,60k,80k,100k"

# Matrix completion at each scale: the base sweep (depths 1-3) and the values each variant adds to it.
COMPLETION = {
    "paper": {"base": {"pretrain_steps": PAPER_TC},
              "rank": {"task1_rank": "2,5,15"}, "rank_with_base": True,
              "observations": "1000,1500,3000,4000", "init_scale": "0.1,0.01,0.0001",
              "init_steps": 50000, "subset": 1000, "subset_observations": "1250,1500,1750,2000",
              "subset_depth_observations": "1500"},
    "smoke": {"base": {"size": 40, "task1_rank": "4", "task2_rank": 2, "observations": "320", "lr": 0.5,
                       "task2_steps": 2500, "pretrain_steps": "0,1k,2k,3k", "record_every": 250},
              "rank": {"task1_rank": "1,2,6", "task2_rank": 3, "observations": "480"}, "rank_with_base": False,
              "observations": "240,480", "init_scale": "0.01,0.0001",
              "init_steps": 2500, "subset": 160, "subset_observations": "200,240,320",
              "subset_depth_observations": "320"},
}
FLOW = {
    "paper": {"depth": "3", "task1_rank": "8", "task2_rank": 2, "observations": "5000", "lr": 0.25,
              "init": "identity", "pretrain_steps": "0,10k,20k,40k", "task2_steps": 10000, "record_every": 100,
              "flow": True},
    "smoke": {"depth": "3", "size": 40, "task1_rank": "4", "task2_rank": 1, "observations": "800", "lr": 0.5,
              "init": "identity", "init_scale": "0.01", "pretrain_steps": "0,800", "task2_steps": 700,
              "record_every": 50, "flow": True},
}
PATHWAYS = {
    "paper": {"depth": "2,3,4,5,6", "deficit_start": "0,100,200,300,400,500,600,700,750,800,850"},
    "smoke": {"depth": "2,3,4", "deficit_start": "0,200,400,750"},
}
LESION = {"depth": "3", "deficit_start": "0", "deficit_length": 200, "hidden_init": "full"}
NONLINEAR = {"depth": "3", "deficit_start": "0,400,750", "deficit_length": 150, "hidden_init": "full"}


def _lazy(name: str):
    """The draw function `name` of kleinman2024_draw, imported when a figure is drawn (numpy, pandas and
    matplotlib stay out of `--list` and `--dry-run`)."""
    def draw(drawing: Drawing) -> str:
        from rewind.reproduce import kleinman2024_draw

        return getattr(kleinman2024_draw, name)(drawing)

    return draw


draw = SimpleNamespace(**{name: _lazy(name) for name in (
    "phase_large", "phase_small", "pathways_modes", "share", "lesion", "nonlinear", "completion_depth",
    "completion_rank", "completion_observations", "completion_init", "completion_subset", "completion_subset_depth",
    "completion_flow")})


def _pathways(scale: str) -> tuple[Request, ...]:
    return (Request("pathways", "pathways", PATHWAYS[scale], "gate"),)


def _lesion(scale: str) -> tuple[Request, ...]:
    return (Request("pathways", "lesion", {**LESION, "lesion_mode": 2}, "lesion"),
            Request("pathways", "lesion-control", LESION, "gate"))


def _nonlinear(kind: str):
    return lambda scale: (Request("pathways", kind, {**NONLINEAR, "nonlinearity": kind}, kind),)


def _base(scale: str) -> Request:
    return Request("completion", "completion", {"depth": "1,2,3", **COMPLETION[scale]["base"]}, "depth")


def _variant(scale: str, root: str, **settings) -> Request:
    base = {**COMPLETION[scale]["base"], "depth": "3"}
    return Request("completion", root, {**base, **settings}, root.removeprefix("completion-"))


def _depth(scale: str) -> tuple[Request, ...]:
    return (_base(scale),)


def _rank(scale: str) -> tuple[Request, ...]:
    c = COMPLETION[scale]
    own = _variant(scale, "completion-rank", **c["rank"])
    return (_base(scale), own) if c["rank_with_base"] else (own,)


def _observations(scale: str) -> tuple[Request, ...]:
    return _base(scale), _variant(scale, "completion-obs", observations=COMPLETION[scale]["observations"])


def _init(scale: str) -> tuple[Request, ...]:
    c = COMPLETION[scale]
    same = Request("completion", "completion", {**COMPLETION[scale]["base"], "depth": "3",
                                                "task2_steps": c["init_steps"]}, "init")
    return same, _variant(scale, "completion-init", init_scale=c["init_scale"], task2_steps=c["init_steps"])


def _subset(scale: str) -> tuple[Request, ...]:
    c = COMPLETION[scale]
    return (_variant(scale, "completion-subset", subset_observations=str(c["subset"]),
                     observations=c["subset_observations"]),)


def _subset_depth(scale: str) -> tuple[Request, ...]:
    c = COMPLETION[scale]
    own = _variant(scale, "completion-subset-depth", depth="1,2", subset_observations=str(c["subset"]),
                   observations=c["subset_depth_observations"])
    return _subset(scale) + (own,)


def _flow(scale: str) -> tuple[Request, ...]:
    return (Request("completion", "completion-flow", FLOW[scale], "flow"),)


FIGURES = (
    Figure("fig1", "Fig. 1 (multipath/phase-large-init.py)", "phase portrait of one mode in two pathways, large init, "
           "depths 2-13, early and late deficit", lambda scale: (), draw.phase_large),
    Figure("fig2", "Fig. 2 (multipath/analytical_and_sgd_final.py, depth 4)", "per-mode singular values of both "
           "pathways, early, middle and late deficit, simulation and analytical curve", _pathways, draw.pathways_modes),
    Figure("share", "Fig. 2's deficits over onsets and depths", "the gated pathway's final share against the "
           "deficit's onset and against depth", _pathways, draw.share),
    Figure("fig3", "Fig. 3 (multipath/analytical_and_sgd_gateSing.py)", "feature lesion: pathway a loses mode 2 for "
           "good, pathway b is gated early", _lesion, draw.lesion),
    Figure("fig7", "Fig. 7 (multipath/phase-small-init.py)", "phase portrait of one mode in two pathways, small init",
           lambda scale: (), draw.phase_small),
    Figure("fig11", "Fig. 11 (multipath/nonlin_sgd_rebuttal_iclr.py, tanh)", "tanh pathways at depth 3, early, "
           "middle and late deficit", _nonlinear("tanh"), draw.nonlinear),
    Figure("fig12", "Fig. 12 (multipath/nonlin_sgd_rebuttal_iclr.py, ReLU)", "ReLU pathways at depth 3, early, "
           "middle and late deficit", _nonlinear("relu"), draw.nonlinear),
    Figure("completion-depth", "matrixcompletion/plot_depth_rank.py (scripts/run-depth-exp.sh)", "matrix "
           "completion: final task-2 error against T_c per depth (task 1 of higher rank than task 2)", _depth, draw.completion_depth),
    Figure("completion-rank", "matrixcompletion/plot_rank.py (scripts/run-rank-exp.sh)", "matrix completion at "
           "depth 3: task 1's rank", _rank, draw.completion_rank),
    Figure("completion-observations", "matrixcompletion/scripts/run-ntrain-exp.sh", "matrix completion at depth 3: "
           "the number of observed entries", _observations, draw.completion_observations),
    Figure("completion-init", "matrixcompletion/scripts/supplemental/run_init.sh", "matrix completion at depth 3: "
           "the init scale", _init, draw.completion_init),
    Figure("completion-subset", "matrixcompletion/main-num-examples.py (scripts/run-numExamples-exp.sh)",
           "subset deficit at depth 3: task 1 sees part of task 2's entries", _subset, draw.completion_subset),
    Figure("completion-subset-depth", "matrixcompletion/plot_depth_subset.py (run-numExamples-depth-exp.sh)",
           "subset deficit per depth", _subset_depth, draw.completion_subset_depth),
    Figure("completion-flow", "matrixcompletion/analytical_singular_vectors_and_sim.py", "singular values of the "
           "end-to-end map, gradient descent beside the analytical flow (Arora et al. 2019)", _flow,
           draw.completion_flow),
)
