import pytest

from rewind import config as cfg
from rewind.errors import UserError
from rewind.studies.imp_settings import branch_identity


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
    from rewind.studies import critical

    config = cfg.load("configs/critical_period_smoke.toml")
    trunk_deficit, length, arms = critical.plan_arms(config, 40)
    assert trunk_deficit == "blur(size=8):0it-" and length == 120 and [a.start for a in arms] == [0, 40, 80, 120]


def test_deficit_windows_may_mix_units():
    c = cfg.load(None, {"deficit": "blur:500it-2ep"})  # 500 < 782 once an epoch is 391 iterations
    assert c.train.deficit == "blur:500it-2ep"


def test_what_is_observed_does_not_change_the_trunk():
    a = cfg.load(None, {})
    assert a.hash() == a.with_values(save_at="500", fisher_every="1ep", eval_every="2ep").hash()
    assert branch_identity(a, 50) == branch_identity(a.with_values(rewind_iter="50it"), 50)


def test_critical_period_recipe_is_achilles():
    blur = cfg.load("configs/critical_period_blur.toml")
    t = blur.train
    assert (t.lr, t.lr_epoch_decay, t.weight_decay, t.momentum, t.batch_size) == (0.075, 0.97, 5e-4, 0.9, 128)
    # The network of their main blur figure, 160 epochs after removal; ResNet-18, their second, alike.
    assert (blur.model.model, blur.critical.after) == ("allcnn", "160ep")
    second = cfg.load("configs/critical_period_blur_resnet18.toml")
    assert second.model.model == "resnet18" and second.with_values(model="allcnn") == blur
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
    section = cfg.all_fields()[name][0]
    command = {"warm": ["warm-start"], "critical": ["critical-period", "--deficit", "blur"]}.get(
        section, ["train"] if section in ("data", "model", "train", "pretrain", "runtime") else ["imp"])
    code, _, err = run_cli([*command, "--out", str(tmp_path / "r"), flag, str(value)], capsys)
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
    # Ash & Adams's code: fit on 2/3 of the training set, score the rest; inputs at mean and std 0.5;
    # each phase until 99% training accuracy over a pass; their MLP with PyTorch's init.
    assert (ash.data.holdout, ash.data.normalize, ash.train.until_train_acc) == ("1/3", "half", 0.99)
    mlp = cfg.load("configs/mlp_cifar10_warmstart.toml")
    assert (mlp.model.model, mlp.data.holdout, mlp.data.normalize, mlp.train.until_train_acc) == (
        "mlp100-100", "1/3", "half", 0.99)
    berariu = cfg.load("configs/resnet18_cifar10_plasticity.toml")
    assert (berariu.model.width, berariu.train.optimizer, berariu.train.steps, berariu.warm.second_steps) == (
        None, "adam", "350ep", "500ep")
    assert berariu.warm.last_evals == 100  # the mean test accuracy over the last 100 epochs


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


def test_each_pretraining_mode_defaults_to_the_protocols_length():
    """PROTOCOLS.md section 3 (Frankle et al. 2020): every mode 'for 0 to 40 epochs'; each defaults to
    40 epochs of its data, the blur to 8x8 (section 4), the subset to half the training set."""
    assert cfg.PRETRAIN_DEFAULTS == {
        "blur": {"pretrain_steps": "40ep", "pretrain_blur_size": 8},
        "random-labels": {"pretrain_steps": "40ep"},
        "rotation": {"pretrain_steps": "40ep"},
        "subset": {"pretrain_steps": "40ep", "pretrain_subset": 0.5},
    }
    assert set(cfg.PRETRAIN_DEFAULTS) == set(cfg.all_fields()["pretrain"][1].metadata["choices"]) - {"none"}
    for mode, defaults in cfg.PRETRAIN_DEFAULTS.items():
        p = cfg.load("configs/resnet20_cifar10.toml", {"pretrain": mode}).pretrain
        assert {k: getattr(p, k) for k in defaults} == defaults
        assert cfg.PretrainConfig(pretrain=mode).pretrain_steps == "40ep"  # the Python API resolves it too
    assert cfg.load(None, {"pretrain": "blur", "pretrain_steps": "10ep"}).pretrain.pretrain_steps == "10ep"


def test_the_default_pretraining_length_is_stored_and_hashed_as_given():
    """The resolved length is what the manifest records and the hash sees: by default or given, one run;
    archives made before the default (an explicit length, or none) keep their hashes."""
    default = cfg.load("configs/resnet20_cifar10.toml", {"pretrain": "blur"})
    explicit = cfg.load("configs/resnet20_cifar10.toml", {"pretrain": "blur", "pretrain_steps": "40ep"})
    assert default == explicit and default.to_dict()["pretrain"]["pretrain_steps"] == "40ep"
    assert default.hash() == explicit.hash() == "0bcc5fe26139"  # as rewind hashed '40ep' given before defaults
    assert cfg.load("configs/resnet20_cifar10.toml").hash() == "3656fa5eb9f3"  # no pre-training: unchanged
    assert default.hash() != default.with_values(pretrain_steps="10ep").hash()
    assert cfg.from_record(default.to_dict()).hash() == default.hash()


def test_an_explicit_zero_pretraining_length_is_refused():
    with pytest.raises(UserError, match=r"^--pretrain blur needs a length above 0, got --pretrain-steps 0it: "
                                        r"leave it out for the mode's default \(40ep\)"):
        cfg.load(None, {"pretrain": "blur", "pretrain_steps": "0it"})


def test_width_is_the_models_own_unless_given(tmp_path):
    """0 channels is refused; left out, the model's own width; archives that recorded 0 for it read as unset."""
    assert cfg.load(None).model.width is None and cfg.load(None).experiment_dict()["model"]["width"] == 16
    with pytest.raises(UserError, match=r"^width must be a whole number >= 1, got 0 \(--width\); leave it out"):
        cfg.load(None, {"width": 0})
    path = tmp_path / "c.toml"
    path.write_text("[model]\nwidth = 0\n")
    with pytest.raises(UserError, match="^width must be"):
        cfg.load(path)
    old = cfg.Config().to_dict()
    old["model"]["width"] = 0
    assert cfg.from_record(old) == cfg.Config() and cfg.from_record(old).hash() == cfg.Config().hash()
