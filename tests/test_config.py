import pytest

from rewind import config as cfg
from rewind.errors import UserError


def test_toml_round_trip(tmp_path):
    c = cfg.load(None, {"lr": 0.05, "steps": "2ep", "augment": False, "save_at": "500,3ep"})
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml(c))
    assert cfg.load(path) == c


def test_shipped_recipe_matches_protocol():
    c = cfg.load("configs/resnet20_cifar10.toml")
    t = c.train
    assert (t.lr, t.momentum, t.weight_decay, t.batch_size, t.nesterov) == (0.1, 0.9, 1e-4, 128, False)
    assert (t.steps, t.lr_milestones, t.lr_gamma, t.warmup) == ("160ep", "80ep,120ep", 0.1, "0it")
    assert c.data.augment and c.model.model == "resnet20" and c.model.width == 16


def test_options_override_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nlr = 0.2\nsteps = "3ep"\n')
    c = cfg.load(path, {"lr": 0.01})
    assert c.train.lr == 0.01 and c.train.steps == "3ep"


def test_unknown_key_names_it_and_the_nearest_valid_one(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlearning_rat = 0.2\n")
    with pytest.raises(UserError, match=r"unknown config key 'train.learning_rat'.*did you mean"):
        cfg.load(path)
    path.write_text("[train]\nmomentun = 0.2\n")
    with pytest.raises(UserError, match=r"did you mean 'train.momentum'"):
        cfg.load(path)
    path.write_text("[trian]\nlr = 0.2\n")
    with pytest.raises(UserError, match=r"unknown config key 'trian'.*did you mean 'train'"):
        cfg.load(path)


@pytest.mark.parametrize("switch_at", ["", ",", "0,2x"])
def test_bad_switch_lists_are_refused(switch_at):
    with pytest.raises(UserError, match="switch_at"):
        cfg.load(None, {"switch_at": switch_at})


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(UserError, match="steps"):
        cfg.load(None, {"steps": "ten epochs"})
    with pytest.raises(UserError, match="resnet"):
        cfg.load(None, {"model": "resnet21"})
    path = tmp_path / "c.toml"
    path.write_text('[train]\nlr = "fast"\n')
    with pytest.raises(UserError, match="train.lr .* must be float"):
        cfg.load(path)


def test_hash_ignores_runtime_and_dataset_location_but_not_hyperparameters():
    a = cfg.load(None, {"source": "/a/cifar10-jpeg.tar.gz"})
    b = cfg.load(None, {"source": "/elsewhere/cifar10-jpeg.tar.gz", "device": "cpu", "progress": "none"})
    assert a.hash() == b.hash()
    assert a.hash() != a.with_values(lr=0.05).hash()
    assert a.hash() != a.with_values(order_seed=1).hash()
    # bf16 changes the weights; the fp32 default stays out of the hash, so archives made before the
    # option existed keep theirs.
    assert a.hash() != a.with_values(precision="bf16").hash()
    assert "precision" not in a.experiment_dict()["train"]


def test_a_control_and_a_perturbation_are_two_branches():
    with pytest.raises(UserError, match="--control random-reinit and --perturb shuffle exclude each other"):
        cfg.load(None, {"control": "random-reinit", "perturb": "shuffle"})


@pytest.mark.parametrize("name, examples, total, milestones", [
    ("resnet20_cifar10", 50000, 62560, (31280, 46920)),
    ("smoke", 10000, 200, (150,)),
])
def test_shipped_configs_resolve_to_their_schedules(name, examples, total, milestones):
    from rewind.train.schedule import Plan

    plan = Plan.from_config(cfg.load(f"configs/{name}.toml").train, examples)
    assert (plan.total, plan.milestones) == (total, milestones)


def test_critical_period_smoke_config_sweeps_four_switch_points():
    from rewind import critical

    config = cfg.load("configs/critical_period_smoke.toml")
    trunk_deficit, length, arms = critical.plan_arms(config, 40)
    assert trunk_deficit == "blur(size=8):0it-" and length == 120 and [a.start for a in arms] == [0, 40, 80, 120]


def test_deficit_windows_may_mix_units():
    c = cfg.load(None, {"deficit": "blur:500it-2ep"})  # 500 < 782 once an epoch is 391 iterations
    assert c.train.deficit == "blur:500it-2ep"


def test_what_is_observed_does_not_change_the_trunk():
    a = cfg.load(None, {})
    assert a.hash() == a.with_values(save_at="500", fisher_every="1ep", eval_every="2ep").hash()
    assert a.branch_identity(50) == a.with_values(rewind_iter="50it").branch_identity(50)


def test_critical_period_recipe_is_achilles():
    t = cfg.load("configs/critical_period_blur.toml").train
    assert (t.lr, t.lr_epoch_decay, t.weight_decay, t.momentum, t.batch_size) == (0.075, 0.97, 5e-4, 0.9, 128)
    from rewind.train.schedule import Plan

    plan = Plan.from_config(t, 50000)
    assert plan.lr_at(391 * 10) == pytest.approx(0.075 * 0.97**10)


# For each valid range, a value just outside it.
OUTSIDE = {"positive": 0, "nonnegative": -1, "count0": -1, "count1": 0, "fraction": 1.5, "open_unit": 1.0, "unit": 1.0, "proportion": 1.5}


def test_every_numeric_field_has_a_valid_range():
    """A new int or float setting must declare its range, or bad values would reach torch."""
    for name, (section, f) in cfg.all_fields().items():
        if cfg.base_type(f) in ("int", "float"):
            assert f.metadata.get("valid") in cfg.RANGES, f"{section}.{name} has no valid range"


@pytest.mark.parametrize("name", [n for n, (_, f) in cfg.all_fields().items() if f.metadata.get("valid")])
def test_every_numeric_field_refuses_a_value_outside_its_range(name, tmp_path, capsys):
    """Each one through the command line: one line naming the field, exit status 2, nothing written."""
    from conftest import run_cli

    f = cfg.all_fields()[name][1]
    value = OUTSIDE[f.metadata["valid"]]
    with pytest.raises(UserError, match=f"^{name} must be "):
        cfg.load(None, {name: value})
    flag = f.metadata.get("flag") or "--" + name.replace("_", "-")
    code, _, err = run_cli(["train", "--out", str(tmp_path / "r"), flag, str(value)], capsys) \
        if cfg.all_fields()[name][0] in ("data", "model", "train", "pretrain", "runtime") \
        else run_cli(["imp", "--out", str(tmp_path / "r"), flag, str(value)], capsys)
    assert code == 2 and err.startswith(f"rewind: error: {name} must be ") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("path", sorted(__import__("glob").glob("configs/*.toml")))
def test_every_shipped_config_loads(path):
    """Each recipe is valid as shipped (keys, ranges, model and optimizer settings)."""
    from rewind.linear import config as linear_config

    if "linear_pathways" in path:
        assert linear_config.load_pathways(path).pathways.seeds == "0,1,2"
    elif "linear_completion" in path:
        assert linear_config.load_completion(path).completion.seeds
    else:
        c = cfg.load(path)
        assert c.model.model and c.train.batch_size >= 1


def test_recipes_of_the_other_papers_match_their_protocols():
    vgg = cfg.load("configs/vgg16_cifar10.toml")
    assert (vgg.model.model, vgg.train.optimizer, vgg.train.lr, vgg.train.lr_milestones) == ("vgg16", "sgd", 0.1,
                                                                                               "80ep,120ep")
    assert vgg.imp.dense_layers == "fc.weight"  # OpenLTH cifar_vgg_16 leaves the output layer dense
    lenet = cfg.load("configs/lenet_mnist.toml")
    assert (lenet.data.source, lenet.model.model, lenet.train.momentum, lenet.train.steps) == ("mnist", "lenet300-100",
                                                                                               0.0, "40ep")
    ash = cfg.load("configs/resnet18_cifar10_warmstart.toml")
    assert (ash.model.model, ash.model.width, ash.train.optimizer, ash.train.lr, ash.data.augment) == (
        "resnet18", 16, "adam", 1e-3, False)
    assert ash.train.lr_milestones == "" and ash.train.weight_decay == 0.0
    berariu = cfg.load("configs/resnet18_cifar10_plasticity.toml")
    assert (berariu.model.width, berariu.train.optimizer, berariu.train.steps, berariu.warm.second_steps) == (
        0, "adam", "350ep", "500ep")


def test_archives_made_before_the_renames_read_as_they_trained():
    recorded = cfg.Config().to_dict()
    recorded["critical"] = {"removal": "0,10ep", "after": "20ep", "direction": "add"}
    del recorded["pretrain"]["pretrain_schedule"]
    recorded["pretrain"].update(pretrain="blur", pretrain_steps="5ep")
    config = cfg.from_record(recorded)
    assert (config.critical.switch_at, config.critical.direction) == ("0,10ep", "normal-then-deficit")
    # A pre-trained archive from before the option restarted the schedule, and keeps its hash.
    assert config.pretrain.pretrain_schedule == "restart"
    assert "pretrain_schedule" not in config.experiment_dict()["pretrain"]
    assert "pretrain_schedule" in config.with_values(pretrain_schedule="offset").experiment_dict()["pretrain"]
