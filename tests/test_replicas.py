"""The replica trainer: N ResNets trained as one stacked model give what each trains alone.

Tolerances. Grouped convs and the batched fc reduce in another order than the plain ones,
so in float32 a replica and its solo run differ by rounding (about 1e-7 after one step), and
the early phase of training amplifies that chaotically (about 1e-3 after 10 steps, 1e-2
after 30 at lr 0.05). So the equivalence test trains in float64, where the same rounding
stays under 3e-15 after 20 steps (measured): a max abs difference under 1e-9 can only be
rounding, while a wrong learning rate, batch, momentum or mask is off by 1e-3 or more.
Checkpoints resumed across solo and parallel runs are compared in float32 after the last 8-14
steps: measured 2e-5 and 5e-5 (max abs), while a resume that loses the momentum is off by
6e-2, so the bound is 1e-3. Parallel runs are compared with each other bit for bit.
"""

import copy
import shutil

import pandas as pd
import pytest
import torch

from conftest import tiny_config
from rewind import data as D
from rewind.archive import run as runs
from rewind.archive.stage import Stage
from rewind.errors import UserError
from rewind.prune import masks as M
from rewind.train import loop, replicas
from rewind.train import trunk
from rewind.train.evaluate import evaluate
from rewind.train.replicas import Replicas, run_segments, train_step_replicas
from rewind.train.schedule import Plan
from rewind.train.segment import Segment
from rewind.train.trunk import Setup, train, train_replicas

DATA = D.synthetic(512, 256, size=16)  # 16x16 images keep every step cheap; the ResNet pools globally
SMALL = dict(batch_size=32, lr_milestones="", eval_every="8it", log_every="4it", save_every="8it")


def setup(steps: int = 20, **overrides) -> Setup:
    config = tiny_config(**{**SMALL, "steps": f"{steps}it", **overrides})
    plan = Plan.from_config(config.train, len(DATA.train_y))
    return Setup(config, torch.device("cpu"), DATA, plan, (DATA.test_x, DATA.test_y))


class AsDouble:
    """A phase transform that feeds float64 batches (see the module docstring)."""

    def batch(self, loader, iteration, position):
        x, y = loader.batch(position)
        return x.double(), y

    def weight_decay_factor(self, iteration):
        return 1.0


def random_masks(model, seed: int, density: float = 0.5) -> M.Masks:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(m.shape, generator=g) < density for k, m in M.ones(model).items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# Replica 0 masked, 1 dense, 2 masked otherwise and on another schedule: all differ in every seed.
CONFIGS = [dict(model_seed=0, order_seed=10, aug_seed=20),
           dict(model_seed=1, order_seed=11, aug_seed=21),
           dict(model_seed=2, order_seed=12, aug_seed=22, lr=0.1, weight_decay=5e-4, lr_milestones="10it")]
MASKED = {0: 100, 2: 102}  # replica -> mask seed


def float64_states() -> list[loop.TrainState]:
    states = []
    for k, overrides in enumerate(CONFIGS):
        s = setup(**overrides)
        model = s.new_model().double()
        state = s.state(model)
        masks = random_masks(model, MASKED[k]) if k in MASKED else None
        states.append(loop.TrainState(model, state.optimizer, state.loader, state.plan, masks, AsDouble()))
    return states


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def solo_and_parallel():
    solo = float64_states()
    for state in solo:
        for it in range(state.plan.total):
            loop.train_step(state, it)
    parallel = float64_states()
    stacked = Replicas(parallel)
    for it in range(parallel[0].plan.total):
        train_step_replicas(stacked, it)
    stacked.write()
    return solo, parallel


def test_each_replica_ends_where_it_ends_alone(solo_and_parallel):
    init = [s.model.state_dict() for s in float64_states()]
    for k, (solo, par) in enumerate(zip(*solo_and_parallel)):
        assert max_diff(solo.model.state_dict(), par.model.state_dict()) < 1e-9, f"replica {k}"
        bufs = [solo.optimizer.state[p]["momentum_buffer"] for p in solo.model.parameters()]
        pbufs = [par.optimizer.state[p]["momentum_buffer"] for p in par.model.parameters()]
        assert max_diff(dict(enumerate(bufs)), dict(enumerate(pbufs))) < 1e-9
        acc = [evaluate(copy.deepcopy(s.model).float(), DATA.test_x, DATA.test_y, s.loader.normalize)["acc"]
               for s in (solo, par)]
        assert abs(acc[0] - acc[1]) <= 0.01
        assert max_diff(init[k], par.model.state_dict()) > 1e-2  # it trained: the match is not vacuous


def test_masks_stay_zero_and_replicas_keep_their_own(solo_and_parallel):
    """Each replica also matched its solo run with its own mask (or none) in the test above."""
    _, parallel = solo_and_parallel
    for k, state in enumerate(parallel):
        params = dict(state.model.named_parameters())
        masks = random_masks(state.model, MASKED[k]) if k in MASKED else M.ones(state.model)
        for name, mask in masks.items():
            assert (params[name][~mask] == 0).all(), f"replica {k} {name}"
            assert (params[name][mask] != 0).all()


OPTIMIZERS = {"sgd": dict(momentum=0.9), "sgd-nesterov": dict(momentum=0.9, nesterov=True), "adam": dict(),
              "adamw": dict(betas=(0.8, 0.99)), "rmsprop": dict(momentum=0.5, alpha=0.9)}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_stacked_optimizer_is_torch_per_replica_bit_for_bit(name):
    """Each replica's rows get exactly torch's update of its own tensors, whatever learning rates and
    weight decays the replicas have at each step (they may start out of step, as joining runs do)."""
    from torch import nn
    from rewind.models.stacked import Stacked
    from rewind.train.replicas import StackedOptimizer

    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop}[name.split("-")[0]]
    n, g = 3, torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    alone = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
             for _ in range(n)]
    states = [type("S", (), {"optimizer": cls(m.parameters(), lr=0.1, foreach=True, **OPTIMIZERS[name])})()
              for m in alone]
    stacked = Stacked(alone)
    names = [k for k, _ in stacked.module.named_parameters()]
    opt = StackedOptimizer(stacked, names, states)
    schedules = [([0.1] * 3, [1e-4] * 3), ([0.1, 0.05, 0.1], [1e-4, 5e-4, 0.0]), ([0.02] * 3, [0.0] * 3)]
    params = dict(stacked.module.named_parameters())
    for step in range(6):
        lrs, wds = schedules[step % 3]
        for k, (model, state) in enumerate(zip(alone, states)):
            state.optimizer.param_groups[0].update(lr=lrs[k], weight_decay=wds[k])
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
        for name_, p in params.items():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            rows = stacked.per_replica(name_, p.grad)
            for k, model in enumerate(alone):
                rows[k].copy_(dict(model.named_parameters())[name_].grad)
        for state in states:
            state.optimizer.step()
        opt.step(stacked, names, lrs, wds)
        for name_, p in params.items():
            for k, model in enumerate(alone):
                mine = dict(model.named_parameters())[name_]
                assert torch.equal(stacked.per_replica(name_, p.detach())[k], mine.detach()), f"{name_} step {step}"
                for key, value in states[k].optimizer.state[mine].items():
                    assert torch.equal(opt.state[opt.aliases[k][names.index(name_)]][key], value), key


def test_mismatched_replicas_are_refused(tmp_path):
    a, b = setup(steps=20), setup(steps=24)
    with runs.open_run(tmp_path / "a", "trunk", a.config.to_dict(), a.config.experiment_dict()) as ra, \
            runs.open_run(tmp_path / "b", "trunk", b.config.to_dict(), b.config.experiment_dict()) as rb:
        segments = [Segment(s.state(s.new_model()), r.stage("trunk"), 0, s.test, "none") for s, r in ((a, ra), (b, rb))]
        with pytest.raises(UserError, match="one length or one end; got lengths 20, 24 and ends 20, 24"):
            run_segments(segments)
    fp32, bf16 = setup(), setup(precision="bf16")
    with pytest.raises(UserError, match="one precision; got None, torch.bfloat16"):
        Replicas([fp32.state(fp32.new_model()), bf16.state(bf16.new_model())])


# Archives: two replicas, 24 iterations, checkpoints at 0, 1, 2, 5, 8, 10, 16, 24.
ARCHIVE = [dict(SMALL, steps="24it", lr_milestones="12it", **c) for c in CONFIGS[:2]]


def weights(root) -> dict[str, torch.Tensor]:
    stage = Stage(runs.read(root).manifest, "trunk")
    return stage.load(stage.steps()[-1]).tensors


def interrupt(monkeypatch, module, name, at: int):
    real = getattr(module, name)

    def step(state, iteration):
        if (iteration if isinstance(iteration, int) else iteration[0]) == at:
            raise KeyboardInterrupt
        return real(state, iteration)

    monkeypatch.setattr(module, name, step)
    return lambda: monkeypatch.setattr(module, name, real)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    root = tmp_path_factory.mktemp("archives")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trunk, "load_data", lambda config: DATA)
        configs = [tiny_config(**c) for c in ARCHIVE]
        train_replicas(configs, [root / "par0", root / "par1"])
        train(configs[0], root / "solo0")
    return configs, root


@pytest.fixture
def small_data(monkeypatch):
    monkeypatch.setattr(trunk, "load_data", lambda config: DATA)


def test_interrupted_parallel_run_resumes_to_identical_weights(archives, tmp_path, monkeypatch, small_data):
    configs, root = archives
    outs = [tmp_path / "r0", tmp_path / "r1"]
    restore = interrupt(monkeypatch, replicas, "train_step_replicas", at=20)
    with pytest.raises(KeyboardInterrupt):
        train_replicas(configs, outs)
    restore()
    shutil.copytree(outs[0], tmp_path / "solo-resume")  # for the solo run below: held up to 16
    results = train_replicas(configs, outs)
    assert [r.resumed_from for r in results] == [16, 16]
    for k, out in enumerate(outs):
        par = weights(root / f"par{k}")
        assert all(torch.equal(v, par[key]) for key, v in weights(out).items())
        pd.testing.assert_frame_equal(pd.read_csv(out / "trunk" / "metrics.csv"),
                                      pd.read_csv(root / f"par{k}" / "trunk" / "metrics.csv"))
    # A solo run resumes a parallel run's checkpoint: 8 steps of float32 rounding away from the parallel result.
    result = train(configs[0], tmp_path / "solo-resume")
    assert result.resumed_from == 16
    assert max_diff(weights(tmp_path / "solo-resume"), weights(root / "par0")) < 1e-3


def test_parallel_run_resumes_solo_checkpoints(archives, tmp_path, monkeypatch, small_data):
    configs, root = archives
    outs = [tmp_path / "s0", tmp_path / "s1"]
    for config, out in zip(configs, outs):
        restore = interrupt(monkeypatch, loop, "train_step", at=20)
        with pytest.raises(KeyboardInterrupt):
            train(config, out)
        restore()
    results = train_replicas(configs, outs)
    assert [r.resumed_from for r in results] == [16, 16]
    assert max_diff(weights(outs[0]), weights(root / "solo0")) < 1e-3


def test_replicas_at_different_steps_resume_from_the_latest_step_all_hold(archives, tmp_path, monkeypatch,
                                                                         small_data):
    configs, root = archives
    outs = [tmp_path / "s0", tmp_path / "s1"]
    for config, out, at in zip(configs, outs, (20, 12)):  # they hold 16 and 10
        restore = interrupt(monkeypatch, loop, "train_step", at=at)
        with pytest.raises(KeyboardInterrupt):
            train(config, out)
        restore()
    results = train_replicas(configs, outs)
    assert [r.resumed_from for r in results] == [10, 10]
    solo = pd.read_csv(root / "solo0" / "trunk" / "metrics.csv")
    assert pd.read_csv(outs[0] / "trunk" / "metrics.csv")[["split", "step"]].equals(solo[["split", "step"]])
    assert max_diff(weights(outs[0]), weights(root / "solo0")) < 1e-3


def test_each_replica_archive_has_the_solo_layout(archives):
    _, root = archives
    par, solo = root / "par0", root / "solo0"
    stages = [Stage(runs.read(r).manifest, "trunk") for r in (par, solo)]
    assert stages[0].steps() == stages[1].steps() == [0, 1, 2, 5, 8, 10, 16, 24]
    assert runs.read(par).status == runs.read(solo).status == "complete"
    metrics = [pd.read_csv(r / "trunk" / "metrics.csv") for r in (par, solo)]
    assert list(metrics[0].columns) == list(metrics[1].columns)
    assert metrics[0][["split", "step", "epoch", "lr"]].equals(metrics[1][["split", "step", "epoch", "lr"]])
    for step in (0, 24):
        a, b = (s.load(step, with_state=True) for s in stages)
        assert {k: v.shape for k, v in a.tensors.items()} == {k: v.shape for k, v in b.tensors.items()}
        assert a.metadata == b.metadata
        oa, ob = a.state["optimizer"], b.state["optimizer"]
        assert oa["param_groups"] == ob["param_groups"]
        assert {i: {k: v.shape for k, v in s.items()} for i, s in oa["state"].items()} == \
               {i: {k: v.shape for k, v in s.items()} for i, s in ob["state"].items()}


def test_complete_replicas_are_not_retrained(archives, tmp_path, small_data):
    configs, root = archives
    shutil.copytree(root / "par0", tmp_path / "done")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "done" / "trunk" / "checkpoints").iterdir()}
    results = train_replicas(configs, [tmp_path / "done", tmp_path / "new"])  # the new one trains alone
    assert [r.resumed_from for r in results] == [24, None]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "done" / "trunk" / "checkpoints").iterdir()} == before
    assert max_diff(weights(tmp_path / "new"), weights(root / "par1")) < 1e-3


def test_compiled_replicas_give_the_eager_weights(archives, tmp_path, monkeypatch, small_data):
    """Replicas compile their stacked model as their own states ask (graphs: CUDA graphs); with the
    eager backend that wrapping must not change a bit of what each replica writes."""
    configs, root = archives
    monkeypatch.setenv("REWIND_COMPILE_BACKEND", "eager")
    modes, real = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: modes.append(kw["mode"]) or real(model, **kw))
    outs = [tmp_path / "c0", tmp_path / "c1"]
    train_replicas([c.with_values(compile="graphs") for c in configs], outs)
    assert modes == ["reduce-overhead"] * 3  # each replica's own model (unused for training), then the stacked one
    for k, out in enumerate(outs):
        par = weights(root / f"par{k}")
        assert all(torch.equal(v, par[key]) for key, v in weights(out).items())


def test_each_replica_keeps_its_own_batchnorm_count():
    """Replicas that started at different iterations (a joining run, a re-initialised control) keep
    their own num_batches_tracked: each gains the stacked steps on top of its own count."""
    from rewind.models.stacked import Stacked

    s = setup()
    models = [s.new_model(), s.new_model()]
    models[1].bn.num_batches_tracked.fill_(20)
    stacked = Stacked(models)
    stacked.module.train()
    x = torch.randn(4, 2 * 3, 16, 16)
    for _ in range(3):
        stacked.module(x)
    stacked.write_to(models)
    stacked.write_to(models)  # writing twice adds nothing twice
    assert [int(m.bn.num_batches_tracked) for m in models] == [3, 23]
