"""Optimizers (SGD, Adam, AdamW, RMSprop) and the models beyond CIFAR ResNets, through training,
IMP, resume and the replica trainer (see test_replicas.py for the tolerances' reasoning)."""

import pytest
import torch

from conftest import cli_args, run_cli, tiny_config
from rewind import config as cfg
from rewind import data as D
from rewind.studies import imp
from rewind.archive import run as runs
from rewind.errors import UserError
from rewind.prune import masks as M
from rewind.train import loop, trunk
from rewind.train.replicas import Replicas, train_step_replicas
from rewind.train.schedule import Plan
from rewind.train.trunk import Setup, train

DATA = D.synthetic(256, 128, size=16)
SMALL = dict(batch_size=16, lr_milestones="", eval_every="8it", log_every="4it", save_every="8it", stats_every="0it")
MOMENTS = ("exp_avg", "exp_avg_sq", "momentum_buffer", "square_avg")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_data(monkeypatch):
    monkeypatch.setattr(trunk, "load_data", lambda config: DATA)


def small_setup(**overrides) -> Setup:
    config = tiny_config(**{**SMALL, "steps": "12it", **overrides})
    return Setup(config, torch.device("cpu"), DATA, Plan.from_config(config.train, len(DATA.train_y)),
                 (DATA.test_x, DATA.test_y))


class AsDouble:
    """Float64 batches: replica and solo runs then agree to rounding (test_replicas.py)."""

    def batch(self, loader, iteration, position):
        x, y = loader.batch(position)
        return x.double(), y

    def weight_decay_factor(self, iteration):
        return 1.0


def double_states(model: dict, optimizer: dict) -> list[loop.TrainState]:
    """Two replicas that differ in every seed and learning rate; the first is masked."""
    states = []
    for k in range(2):
        s = small_setup(**model, **{**optimizer, "lr": optimizer["lr"] * (1 + k)}, model_seed=k, order_seed=10 + k,
                        aug_seed=20 + k)
        net = s.new_model().double()
        state = s.state(net)
        masks = None
        if k == 0:
            g = torch.Generator().manual_seed(5)
            masks = {n: torch.rand(m.shape, generator=g) < 0.5 for n, m in M.ones(net).items()}
        states.append(loop.TrainState(net, state.optimizer, state.loader, state.plan, masks, AsDouble()))
    return states


@pytest.mark.parametrize("model, optimizer", [
    (dict(model="resnet18", width=4), dict(optimizer="sgd", lr=0.05)),
    (dict(model="vgg11", width=8), dict(optimizer="adam", lr=1e-3, weight_decay=1e-4)),
    (dict(model="lenet64-32", width=None), dict(optimizer="adam", lr=1e-3)),
    (dict(model="allcnn", width=8), dict(optimizer="rmsprop", lr=1e-3, momentum=0.5)),
    (dict(model="wrn10-1", width=None), dict(optimizer="adamw", lr=1e-3, weight_decay=1e-2)),
])
def test_each_replica_of_any_model_and_optimizer_ends_where_it_ends_alone(model, optimizer):
    solo, parallel = double_states(model, optimizer), double_states(model, optimizer)
    init = [s.model.state_dict() for s in double_states(model, optimizer)]
    for state in solo:
        for it in range(state.plan.total):
            loop.train_step(state, it)
    stacked = Replicas(parallel)
    for it in range(parallel[0].plan.total):
        train_step_replicas(stacked, it)
    stacked.write()
    for k, (a, b) in enumerate(zip(solo, parallel)):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert max((sa[n] - sb[n]).abs().max().item() for n in sa) < 1e-9, f"replica {k}"
        assert max((sa[n] - init[k][n]).abs().max().item() for n in sa) > 1e-3  # it trained
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            for key in MOMENTS:
                if key in a.optimizer.state[pa]:
                    assert (a.optimizer.state[pa][key] - b.optimizer.state[pb][key]).abs().max() < 1e-9
    params = dict(parallel[0].model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in parallel[0].masks.items())


def test_replicas_of_different_optimizers_are_refused_before_training():
    a, b = small_setup(optimizer="sgd"), small_setup(optimizer="adam", lr=1e-3)
    with pytest.raises(UserError, match="one optimizer with the same settings"):
        Replicas([a.state(a.new_model()), b.state(b.new_model())])


def test_a_layer_that_cannot_be_stacked_is_refused():
    from torch import nn
    from rewind.models import stacked

    with pytest.raises(UserError, match="Dropout layer cannot be stacked exactly"):
        stacked.check(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)))


@pytest.fixture(scope="module")
def adam_imp(tmp_path_factory):
    """VGG-16 (narrow) with Adam on synthetic data: a trunk and one IMP level that restores Adam's
    moments at the rewind point."""
    root = tmp_path_factory.mktemp("adam-imp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trunk, "load_data", lambda config: DATA)
        config = tiny_config(**{**SMALL, "steps": "16it"}, model="vgg16", width=8, optimizer="adam", lr=1e-3,
                             weight_decay=1e-4, levels=1, rewind_iter="8it", rewind_optimizer=True)
        [result] = imp.run(config, out=root / "run")
    return root / "run", result


def test_adam_moments_and_weights_stay_zero_at_pruned_entries(adam_imp):
    root, result = adam_imp
    mask = M.load(result.branch / "level_01" / "mask.safetensors")
    stage = runs.read(result.branch).stage("level_01")
    end = stage.load(16, with_state=True)
    state = end.state["optimizer"]["state"]
    checked = 0
    for i, name in enumerate(models_names(root)):  # the optimizer numbers parameters in the model's order
        if name in mask:
            assert (end.tensors[name][~mask[name]] == 0).all()
            for key in ("exp_avg", "exp_avg_sq"):
                assert (state[i][key][~mask[name]] == 0).all(), (name, key)
                assert (state[i][key][mask[name]] != 0).any()
            checked += 1
    assert checked == len(mask) and 0.79 < M.density(mask) < 0.81


def test_rewind_optimizer_restores_adams_moments_under_the_mask(adam_imp):
    root, result = adam_imp
    mask = M.load(result.branch / "level_01" / "mask.safetensors")
    trunk_state = runs.read(root).stage("trunk").load(8, with_state=True).state["optimizer"]["state"]
    level_start = runs.read(result.branch).stage("level_01").load(8, with_state=True).state["optimizer"]["state"]
    model = models_names(root)
    for i, name in enumerate(model):
        if name in mask:
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(level_start[i][key], trunk_state[i][key] * mask[name])
            assert level_start[i]["step"] == trunk_state[i]["step"] == 8


def models_names(root):
    config = cfg.from_sections(runs.read(root).manifest.data["config"])
    return [n for n, _ in small_setup(model=config.model.model, width=config.model.width).new_model().named_parameters()]


def test_an_interrupted_adam_run_resumes_bit_for_bit(tmp_path, monkeypatch, small_data):
    config = tiny_config(**{**SMALL, "steps": "16it"}, model="lenet64-32", width=None, optimizer="adam", lr=1e-3,
                         data_dir=str(tmp_path / "cache"))
    train(config, tmp_path / "full")
    real = loop.train_step

    def stop(state, iteration):
        if iteration == 12:
            raise KeyboardInterrupt
        return real(state, iteration)

    monkeypatch.setattr(loop, "train_step", stop)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut")
    monkeypatch.setattr(loop, "train_step", real)
    assert train(config, tmp_path / "cut").resumed_from == 10  # the dense checkpoint before 12
    a, b = (runs.read(tmp_path / r).stage("trunk").load(16, with_state=True) for r in ("full", "cut"))
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    sa, sb = a.state["optimizer"]["state"], b.state["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_pretraining_and_the_second_warm_phase_take_their_own_optimizer(tmp_path, small_data):
    config = tiny_config(**{**SMALL, "steps": "8it"}, model="lenet64-32", width=None, pretrain="blur", pretrain_steps="4it",
                         pretrain_optimizer="adam", pretrain_lr=1e-3, data_dir=str(tmp_path / "cache"))
    train(config, tmp_path / "run")
    run = runs.read(tmp_path / "run")
    pre = run.stage("trunk/pretrain").load(4, with_state=True).state["optimizer"]
    main = run.stage("trunk").load(4, with_state=True).state["optimizer"]  # 8 - 4: the schedule's offset
    assert set(pre["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and pre["param_groups"][0]["lr"] == 1e-3
    assert set(main["state"][0]) == {"momentum_buffer"}
    second = config.with_optimizer("rmsprop", 0.01)
    assert (second.train.optimizer, second.train.lr, second.train.momentum) == ("rmsprop", 0.01, None)
    assert cfg.optimizer_settings(second.train) == {"momentum": 0.0, "alpha": 0.99, "eps": 1e-8}


def test_new_settings_at_their_defaults_keep_old_archives_hashes():
    """The hashes of the default recipe and of a pre-training config before models and optimizers
    gained settings (computed with that code): their archives still resume and take branches."""
    assert cfg.Config().hash() == "3656fa5eb9f3"
    assert cfg.load("configs/smoke.toml", {"pretrain": "blur", "pretrain_schedule": "restart"}).hash() == "b3a5dc043f17"
    adam = cfg.load(None, {"optimizer": "adam"}).experiment_dict()["train"]
    assert adam["betas"] == [0.9, 0.999] and "momentum" not in adam and "nesterov" not in adam


@pytest.mark.parametrize("args, message", [
    (["--lr", "-1"], "lr must be > 0, got -1.0"),
    (["--optimizer", "adam", "--betas", "0.9,1.0"], "betas must be two numbers in [0, 1)"),
    (["--optimizer", "adam", "--momentum", "0.9"], "momentum is a setting of sgd and rmsprop"),
    (["--optimizer", "sgd", "--alpha", "0.9"], "alpha is a setting of rmsprop"),
    (["--optimizer", "rmsprop", "--nesterov"], "nesterov is a setting of sgd"),
    (["--momentum", "1.5"], "momentum must be in [0, 1), got 1.5"),
    (["--optimizer", "adam", "--eps", "0"], "eps must be > 0, got 0.0"),
    (["--weight-decay", "-0.1"], "weight_decay must be >= 0, got -0.1"),
    (["--model", "wrn16-8", "--width", "4"], "wrn16-8 takes no --width"),
    (["--model", "vgg17"], "unknown model 'vgg17'"),
])
def test_bad_model_and_optimizer_settings_are_one_line(tmp_path, capsys, args, message):
    code, out, err = run_cli(["train", "--out", str(tmp_path / "r"), *cli_args(data_dir=str(tmp_path / "c")), *args],
                             capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model", ["resnet18", "vgg11", "wrn10-2", "lenet300-100", "allcnn", "resnet14"])
def test_every_model_trains_through_rewind_train(tmp_path, capsys, model):
    width = {"resnet18": "4", "vgg11": "8", "allcnn": "8", "resnet14": "4"}.get(model)
    args = cli_args(data_dir=str(tmp_path / "c"), steps="2it", train_examples=64, test_examples=32,
                    eval_every="2it", save_every="2it", stats_every="0it", model=model)
    if model == "lenet300-100":  # the MNIST MLP on MNIST's shape: 1x28x28, 784 inputs
        args[args.index("--data") + 1] = "synthetic:mnist"
    if width is None:
        args = args[:args.index("--width")] + args[args.index("--width") + 2:]
    else:
        args[args.index("--width") + 1] = width
    code, out, err = run_cli(["train", "--out", str(tmp_path / "r"), *args], capsys)
    assert code == 0, err
    run = runs.read(tmp_path / "r")
    assert run.manifest.data["identity"]["model"]["model"] == model
    weights = run.stage("trunk").load(2).tensors
    fresh = small_setup(model=model, width=int(width) if width else None)
    assert set(weights) == set(fresh.new_model().state_dict())
    if model == "lenet300-100":
        assert weights["fc_layers.0.weight"].shape == (300, 784)
