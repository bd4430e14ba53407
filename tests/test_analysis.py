import math

import pandas as pd
import pytest
import torch

from conftest import tiny_config
from rewind import models, seeds
from rewind.analysis import lmc
from rewind.train import early
from rewind.analysis.early_report import early_phase_table, write_early_phase, write_tensorboard
from rewind.analysis.overlap import overlap
from rewind.archive import run as runs
from rewind.archive.run import open_run
from rewind.errors import UserError
from rewind.prune.perturb import KINDS, kaiming_std, perturb
from rewind.train import loop
from rewind.train.evaluate import evaluate
from rewind.train.trunk import Setup, train

HELD = [0, 1, 2, 5, 10, 20, 25, 40]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """A tiny trunk of 40 iterations, checkpoints at HELD, test evaluations every 20."""
    root = tmp_path_factory.mktemp("trunk")
    config = tiny_config(data_dir=str(root / "cache"), steps="40it", lr_milestones="30it", eval_every="20it")
    train(config, root / "run")
    return config, root / "run"


@pytest.fixture(scope="module")
def report(trunk):
    return write_early_phase(trunk[1], hist_steps=(0, 10))


# Early-phase statistics ------------------------------------------------------------------------

def test_hand_built_state_dicts_give_known_values():
    w0 = {"fc.weight": torch.tensor([[1.0, -1.0, 2.0, -2.0]])}
    w1 = {"fc.weight": torch.tensor([[1.0, 1.0, -2.0, -2.0]]), "fc.bias": torch.tensor([5.0]),
          "bn.weight": torch.tensor([0.5, 1.5]), "bn.bias": torch.zeros(2), "bn.running_mean": torch.zeros(2)}
    stats = early.to_floats(early.weight_stats(w1, init=w0, final=w1))
    assert stats["sign_diff_init"] == 0.5
    assert stats["dist_init_l2"] == pytest.approx(math.sqrt(0 + 4 + 16 + 0))
    assert stats["dist_init_rel"] == pytest.approx(math.sqrt(20 / 10))
    assert stats["mean_abs_w"] == 1.5  # the bias is not a prunable weight
    assert stats["dist_final_l2"] == 0 and stats["sign_diff_final"] == 0
    assert stats["bn_gamma_mean"] == 1.0 and stats["bn_gamma_std"] == 0.5  # population std
    assert stats["layer/fc/sign_diff_init"] == 0.5 and stats["layer/bn/bn_gamma_mean"] == 1.0
    # Cosine similarity: <w1, w0> = 1 - 1 - 4 + 4 = 0, so orthogonal to init; 1 against itself.
    assert stats["cos_init"] == 0.0 and stats["cos_final"] == 1.0 and stats["layer/fc/cos_init"] == 0.0


def test_cosine_similarity_of_a_constructed_network():
    """Two layers: one at 60 degrees from its reference, one reversed; the whole network pools them."""
    ref = {"a.weight": torch.tensor([[1.0, 0.0]]), "b.weight": torch.tensor([[0.0, 2.0]])}
    w = {"a.weight": torch.tensor([[1.0, 3.0 ** 0.5]]), "b.weight": torch.tensor([[0.0, -1.0]])}
    stats = early.to_floats(early.cosine(w, ref, "init"))
    assert stats["layer/a/cos_init"] == pytest.approx(0.5) and stats["layer/b/cos_init"] == -1.0
    # <w, ref> = 1 - 2 = -1; ||w|| = sqrt(4 + 1), ||ref|| = sqrt(1 + 4)
    assert stats["cos_init"] == pytest.approx(-1 / 5)
    assert early.to_floats(early.cosine(ref, ref, "init"))["cos_init"] == 1.0


def test_prunable_weights_of_a_state_dict_are_the_models_prunable_weights():
    model = models.build("resnet8", width=8)
    assert list(early.prunable_weights(model.state_dict())) == list(models.prunable(model))


def test_table_has_one_row_per_checkpoint_and_zero_distance_at_init(trunk, report):
    _, root = trunk
    table = pd.read_csv(report.csv)
    assert table.step.tolist() == HELD
    layers = [early.layer_of(n) for n in models.prunable(models.build("resnet8", width=8))]
    expected = ["step", "epoch", "test_acc", "test_loss", *early.STATISTICS]
    expected += [f"layer/{layer}/{stat}" for layer in layers
                 for stat in ("mean_abs_w", "dist_init_l2", "sign_diff_init", "cos_init", "cos_final",
                              "dist_final_rel", "grad_norm")]
    assert not set(expected) - set(table.columns)
    first, last = table.iloc[0], table.iloc[-1]
    assert first.dist_init_l2 == 0 and first.dist_init_rel == 0 and first.sign_diff_init == 0
    assert first.cos_init == 1.0 and last.cos_final == 1.0 and first[f"layer/{layers[0]}/cos_init"] == 1.0
    assert last.dist_final_l2 == 0 and last.sign_diff_final == 0
    assert (table.cos_init.diff().iloc[1:] < 0).all()  # turning away from init, step by step
    assert (table.dist_init_l2.iloc[1:] > 0).all() and (table.sign_diff_init.iloc[1:] > 0).all()
    # Whole-network values pool the layers: L2 is the root of the summed squares.
    per_layer = [table[f"layer/{layer}/grad_norm"] ** 2 for layer in layers]
    assert table.grad_norm.tolist() == pytest.approx(sum(per_layer).pow(0.5).tolist(), rel=1e-5)
    # Test accuracy: as logged where the trainer evaluated, evaluated from the checkpoint elsewhere.
    metrics = pd.read_csv(root / "trunk" / "metrics.csv")
    logged = metrics[metrics.split == "test"].set_index("step").acc
    assert table.set_index("step").test_acc[logged.index].tolist() == logged.tolist()
    assert table.test_acc.notna().all() and table.test_acc.iloc[-1] > table.test_acc.iloc[0] + 0.2
    assert report.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_holds_early_scalars_histograms_and_layout(report, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(report.tensorboard), size_guidance={"histograms": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {f"early/{s}" for s in early.STATISTICS} | {"early/test_acc"} <= set(tags["scalars"])
    assert "early/layer/blocks.0.conv1/sign_diff_init" in tags["scalars"]
    dist = acc.Scalars("early/dist_init_l2")
    assert [e.step for e in dist] == HELD and dist[0].value == 0 and dist[1].value > 0
    assert {"early/weights/all", "early/weights/conv", "early/weights/fc"} <= set(tags["histograms"])
    assert [e.step for e in acc.Histograms("early/weights/all")] == [0, 10, 40]  # the final step too
    assert "custom_scalars__config__" in tags["tensors"]
    for _ in range(2):  # a re-run replaces the events instead of adding a second copy of every curve
        write_tensorboard(tmp_path, report.table.head(2), {})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_online_hook_logs_the_same_statistics_as_the_table(trunk):
    config, root = trunk

    class Log:
        def __init__(self):
            self.rows = {}

        def log(self, split, step, values, epoch=None):
            self.rows[(split, step)] = values

    setup = Setup.create(config)
    state = setup.state(setup.new_model())
    init = {k: v.clone() for k, v in state.model.state_dict().items()}
    log, given = Log(), Log()
    loop.run(state, 0, 10, [early.EarlyStats(log, steps={0, 1, 10}), early.EarlyStats(given, {10}, init=init)])
    assert set(log.rows) == {("early", 0), ("early", 1), ("early", 10)}
    assert given.rows["early", 10] == log.rows["early", 10]  # init given (as when resuming) or copied at 0
    assert log.rows["early", 0]["dist_init_l2"] == 0 and "grad_norm_last_batch" not in log.rows["early", 0]
    table = early_phase_table(root, steps=[10], evaluate_missing=False).iloc[0]
    assert log.rows["early", 0]["cos_init"] == 1.0
    for stat in ("mean_abs_w", "dist_init_l2", "dist_init_rel", "sign_diff_init", "cos_init", "bn_gamma_std"):
        assert log.rows["early", 10][stat] == pytest.approx(table[stat], rel=1e-5)
    # At step 1 it is the gradient SGD took at iteration 0: init weights, batch 0.
    expected = early.grad_norm(setup.new_model(), init, *state.loader.batch(0))["grad_norm"]
    assert log.rows["early", 1]["grad_norm_last_batch"] == pytest.approx(float(expected), rel=1e-5)


# Mask overlap ----------------------------------------------------------------------------------

def test_mask_overlap_with_itself_its_complement_and_by_hand():
    g = seeds.generator(0, "test-masks")
    a = {"conv.weight": torch.rand(8, 3, 3, 3, generator=g) < 0.3, "fc.weight": torch.rand(10, 8, generator=g) < 0.3}
    same, complement = overlap(a, a), overlap(a, {k: ~v for k, v in a.items()})
    for layer in ("", "layer/conv/", "layer/fc/"):
        assert same[f"{layer}jaccard"] == 1 and same[f"{layer}hamming"] == 0
        assert complement[f"{layer}jaccard"] == 0 and complement[f"{layer}hamming"] == 1
    hand = overlap({"w.weight": torch.tensor([True, True, False, False])},
                   {"w.weight": torch.tensor([True, False, True, False])})
    assert hand["jaccard"] == pytest.approx(1 / 3) and hand["hamming"] == 0.5


# Perturbations ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rewind_point():
    sd = models.build("resnet8", width=8, seed=3).state_dict()
    g = seeds.generator(0, "test-perturb-mask")
    masks = {k: torch.rand(w.shape, generator=g) < 0.5 for k, w in early.prunable_weights(sd).items()}
    return sd, masks


@pytest.mark.parametrize("kind", KINDS)
def test_each_perturbation_keeps_the_mask_and_is_seeded(rewind_point, kind):
    sd, masks = rewind_point
    out = perturb(sd, masks, kind, seed=1)
    for name, m in masks.items():
        assert (out[name][~m] == 0).all() and (out[name][m] != sd[name][m]).any()
    for name in sd.keys() - masks.keys():
        assert torch.equal(out[name], sd[name])  # BatchNorm, biases and buffers untouched
    again, other = perturb(sd, masks, kind, seed=1), perturb(sd, masks, kind, seed=2)
    assert all(torch.equal(out[k], again[k]) for k in masks)
    assert not all(torch.equal(out[k], other[k]) for k in masks)


def test_perturbations_have_their_defining_property(rewind_point):
    sd, masks = rewind_point
    kept = {k: sd[k][m] for k, m in masks.items()}
    std = {k: kaiming_std(sd[k].shape) for k in masks}

    def new(kind, **kw):
        out = perturb(sd, masks, kind, seed=5, **kw)
        return {k: out[k][m] for k, m in masks.items()}

    def pooled(values):  # kept values in units of each layer's init std, whole network
        return torch.cat([values[k] / std[k] for k in masks])

    for kind in ("sign-keep", "shuffle-keep-signs"):
        assert all(torch.equal(v.sign(), kept[k].sign()) for k, v in new(kind).items())
    shuffled = new("shuffle")
    assert all(torch.equal(v.sort().values, kept[k].sort().values) for k, v in shuffled.items())
    assert all(torch.equal(v.abs().sort().values, kept[k].abs().sort().values)
               for k, v in new("shuffle-keep-signs").items())
    noise = pooled({k: v - kept[k] for k, v in new("noise", scale=0.5).items()})
    assert noise.std().item() == pytest.approx(0.5, rel=0.1)
    assert pooled(new("reinit")).std().item() == pytest.approx(1.0, rel=0.1)
    assert pooled(new("sign-keep")).abs().mean().item() == pytest.approx(math.sqrt(2 / math.pi), rel=0.1)
    explicit = new("noise", init_std={k: 2 * s for k, s in std.items()})
    assert pooled({k: v - kept[k] for k, v in explicit.items()}).std().item() == pytest.approx(2.0, rel=0.1)


def test_unknown_perturbation_is_a_user_error(rewind_point):
    with pytest.raises(UserError, match="sign-keep"):
        perturb(*rewind_point, "flip", seed=0)


# Linear mode connectivity ----------------------------------------------------------------------

def test_interpolation_is_exact_at_the_endpoints():
    a, b = {"w": torch.randn(100), "n": torch.tensor(3)}, {"w": torch.randn(100), "n": torch.tensor(7)}
    assert torch.equal(lmc.interpolate(a, b, 0.0)["w"], a["w"]) and torch.equal(lmc.interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(lmc.interpolate(a, b, 0.25)["w"], 0.75 * a["w"] + 0.25 * b["w"])
    assert torch.equal(lmc.interpolate(a, a, 0.3)["w"], a["w"])


def test_barrier_is_the_rise_above_the_mean_of_the_endpoints(monkeypatch):
    """Errors 0.1, 0.4, 0.2 along the path: the barrier is 0.4 - (0.1 + 0.2) / 2 = 0.25 (Frankle et al.)."""
    accuracies = iter([0.9, 0.6, 0.8])
    monkeypatch.setattr(lmc, "evaluate", lambda *args, **kw: {"acc": next(accuracies), "loss": 1.0})
    monkeypatch.setattr(lmc, "recompute_bn", lambda model, batches: None)
    weights = models.build("resnet8", 8, 10, 0).state_dict()
    curve = lmc.barrier(lambda: models.build("resnet8", 8, 10, 0), weights, weights, [], torch.zeros(1),
                        torch.zeros(1), None, points=3, bn_batches=0)
    assert curve.alphas == [0, 0.5, 1] and curve.errors == pytest.approx([0.1, 0.4, 0.2])
    assert curve.barrier == pytest.approx(0.25)


def test_interpolated_batchnorm_statistics_are_used_as_they_are(monkeypatch):
    """bn='interpolate': each point is evaluated with lerp(a, b, alpha) of the running statistics, none recomputed."""
    seen = []

    def record(model, *args, **kw):
        seen.append(float(model.bn.running_mean.mean()))
        return {"acc": 0.5, "loss": 1.0}

    monkeypatch.setattr(lmc, "evaluate", record)
    monkeypatch.setattr(lmc, "recompute_bn", lambda model, batches: pytest.fail("statistics recomputed"))
    a, b = models.build("resnet8", 8, 10, 0).state_dict(), models.build("resnet8", 8, 10, 1).state_dict()
    b["bn.running_mean"] = torch.full_like(b["bn.running_mean"], 4.0)
    curve = lmc.barrier(lambda: models.build("resnet8", 8, 10, 0), a, b, [], torch.zeros(1), torch.zeros(1), None,
                        points=5, bn="interpolate")
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0] and set(curve.frame().bn) == {"interpolate"}


def test_children_endpoints_and_barrier(trunk):
    config, root = trunk
    setup, (c1, c2) = lmc.train_children(root, 20, order_seeds=(1, 2))
    assert (c1.order_seed, c1.aug_seed, c2.order_seed, c2.aug_seed) == (1, 1, 2, 2)
    assert not torch.equal(c1.weights["fc.weight"], c2.weights["fc.weight"])
    loader = setup.state(setup.new_model()).loader
    batches, normalize = lmc.bn_batches_from(loader, 5), loader.normalize
    curve = lmc.barrier(setup.new_model, c1.weights, c2.weights, batches, *setup.test, normalize, points=5, bn_batches=5)
    assert curve.alphas == [0, 0.25, 0.5, 0.75, 1]
    assert curve.barrier == pytest.approx(max(0.0, max(curve.errors) - (curve.errors[0] + curve.errors[-1]) / 2))
    # The endpoints are each child's own accuracy, measured as at every other point: with BatchNorm
    # statistics recomputed on the same batches. (The child's logged accuracy uses the running
    # averages of its last training steps instead, so it differs a little.)
    for child, error in ((c1, curve.errors[0]), (c2, curve.errors[-1])):
        model = setup.new_model()
        early.load_weights(model, child.weights)
        lmc.recompute_bn(model, batches)
        assert error == 1 - evaluate(model, *setup.test, normalize)["acc"]
    # Identical children (training is deterministic: see the next test) lie on a flat path.
    same = lmc.barrier(setup.new_model, c1.weights, dict(c1.weights), batches, *setup.test, normalize, points=5)
    assert same.barrier == 0 and len(set(same.errors)) == 1


def test_child_with_the_trunks_seed_and_momentum_reproduces_the_trunk(trunk, tmp_path):
    """A child from k=20 with the trunk's data order and momentum, written as a branch stage, is the trunk.

    This checks that children continue the trunk's plan (schedule, batches) from k exactly.
    """
    from rewind.analysis.archive import reopen
    from rewind.train.replicas import train_segments
    from rewind.train.segment import Segment

    config, root = trunk
    run, setup = reopen(root)
    with open_run(tmp_path / "branch", "lmc", config.to_dict(), config.experiment_dict()) as branch:
        seeds = [(config.train.order_seed, config.train.aug_seed)]
        [state] = lmc.child_states(run, setup, 20, seeds, keep_momentum=True)
        train_segments([Segment(state, branch.stage("child_0"), 20, setup.test, "none")])
        stage = branch.stage("child_0")
        assert stage.steps()[-1] == 40 and (stage.dir / "metrics.csv").exists()
    final = runs.read(root).stage("trunk").load(40).tensors
    child = state.model.state_dict()
    assert all(torch.equal(child[k], final[k]) for k in final)
