"""Reference values for kleinman2024's figures: only values the paper states or the authors' code gives
when run on its settings, each row with its source. Keyed by figure; each row holds the figure's
coordinates and the value, in the columns of the figure's CSV. None is made up: a figure with no
known value (the matrix-completion sweeps but one) has no entry.

The paper's text gives no number these figures show (its figures are plots), so every value here is
the authors' code (`mjkleinman/CriticalPeriodDeepLinearNets`) run on its own settings: their loops
re-implemented line by line in a throwaway script (their global RNG order, nn.Linear, autograd,
torch.optim.SGD, float32), run on CPU on 2026-12-03 (issue 23), not committed. Their first arm of a
run starts from the very init rewind draws for that seed (`--hidden-init full`), and rewind gives its
numbers to 1e-7; their later arms draw a new hidden basis each (a side effect of their loop), which
matters only with a nonlinearity.
"""

from __future__ import annotations

MULTIPATH = "re-implementation of the authors' multipath/analytical_and_sgd_final.py (configs/multipath-depth4-analytical.yaml), seed 0"
GATE_SING = "re-implementation of the authors' multipath/analytical_and_sgd_gateSing.py (configs/multipath-gateSing-analytical.yaml), seed 0"
NONLIN = "re-implementation of the authors' multipath/nonlin_sgd_rebuttal_iclr.py (configs/iclr-rebuttal/multipath-nonlin-{}-depth3-*), seed 0"
PHASE_LARGE = "re-implementation of the authors' multipath/phase-large-init.py, their 100 draws (numpy default_rng(49827345))"
PHASE_SMALL = "re-implementation of the authors' multipath/phase-small-init.py (both pathways from p = 0.005, 1M updates)"
COMPLETION = ("re-implementation of the authors' matrixcompletion/main.py loop (configs/variable-depth.yaml), their seeds 0, 1, 2 (their own "
              "targets), measured for README in issue 19")

_MULTIPATH_SHARES = {(2, 0): 0.022095, (2, 400): 0.498471, (2, 750): 0.499999,
                     (3, 0): 0.02486, (3, 400): 0.476254, (3, 750): 0.499993,
                     (4, 0): 0.024763, (4, 400): 0.420128, (4, 750): 0.499986}
_GATE_SING = [(3.859571, 0.01341), (0.012567, 2.64575), (1.716531, 0.015518), (1.716755, 0.015294),
              (0.959971, 0.040027), (0.960053, 0.039945), (0.960075, 0.039922), (0.960121, 0.039877)]
_NONLIN = {"tanh": (0.088283, 0.466822, 0.499903), "relu": (0.008427, 0.409729, 0.49972)}
_PHASE_LARGE = {("early", 2): 0.4311, ("early", 5): 0.17733, ("early", 8): 0.08868, ("early", 13): 0.04464,
                ("late", 2): 0.44738, ("late", 5): 0.49403, ("late", 8): 0.50454, ("late", 13): 0.50976}
_COMPLETION = {(0, 0): 0.0010, (0, 1): 0.0001, (0, 2): 0.0034, (20000, 0): 0.274, (20000, 1): 0.722, (20000, 2): 0.463}

REFERENCES: dict[str, list[dict]] = {
    "fig1": [{"depth": d, "deficit": name, "share_b": v, "source": PHASE_LARGE} for (name, d), v in _PHASE_LARGE.items()],
    "fig7": [{"depth": d, "deficit": name, "share_b": v, "source": PHASE_SMALL} for (name, d), v in (
        (("early", 2), 0.318109), (("early", 3), 0.162485), (("early", 4), 0.097587), (("late", 2), 0.5),
        (("late", 3), 0.5), (("late", 4), 0.5))],
    "fig2": [{"depth": 4, "deficit_start": o, "gated_share": v, "source": MULTIPATH}
             for (d, o), v in _MULTIPATH_SHARES.items() if d == 4],
    "share": [{"depth": d, "deficit_start": o, "gated_share": v,
               "source": f"authors' multipath/analytical_and_sgd_final.py at depth {d} (their config: 4), seed 0"}
              for (d, o), v in _MULTIPATH_SHARES.items()],
    "fig3": [{"arm": "lesion", "mode": m + 1, "k_a": a, "k_b": b, "share_b": round(b / (a + b), 6), "source": GATE_SING}
             for m, (a, b) in enumerate(_GATE_SING)],
    "fig11": [{"depth": 3, "deficit_start": o, "gated_share": v, "source": NONLIN.format("tanh")}
              for o, v in zip((0, 400, 750), _NONLIN["tanh"])],
    "fig12": [{"depth": 3, "deficit_start": o, "gated_share": v, "source": NONLIN.format("relu")}
              for o, v in zip((0, 400, 750), _NONLIN["relu"])],
    "completion-depth": [{"depth": 3, "pretrain_steps": t, "seed": s, "task2_error": v, "source": COMPLETION}
                         for (t, s), v in _COMPLETION.items()],
}
