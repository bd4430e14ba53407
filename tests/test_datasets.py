"""The torchvision datasets, read from tiny fake copies in torchvision's own on-disk formats, and
the synthetic stand-ins of their shapes.

How a fake copy loads. Torchvision checks what it finds before parsing it: MNIST only that the
four unpacked idx files exist under MNIST/raw/; CIFAR-100 and SVHN the md5 of every file
against a table in the dataset class (and MNIST the md5 of a .gz it is to unpack). A tiny copy
cannot have the real files' md5, so each test writes its files where torchvision looks, computes
their md5 and puts those in the class's table (`monkeypatch` restores it). Torchvision's own
code then runs unchanged: the integrity check passes, `download=True` finds the files in place
and downloads nothing, and its own readers parse the files (idx headers, latin-1 pickles,
.mat through scipy, gunzip of the .gz). Replacing the download or the parser instead would
test a copy of torchvision, not the files it reads. The network is cut (`urlopen` raises) in
every test, so a wrong table fails at once rather than downloading the real dataset.
"""

import gzip
import hashlib
import pickle
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rewind import config as cfg
from rewind import data as D
from rewind.train.fisher import fisher_trace, sample_labels
from rewind.data import phases as P
from rewind.data import sources
from rewind.data.loader import PAD
from rewind.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    sources._load.cache_clear()  # every test reads its own files, not a dataset of an earlier test
    yield
    sources._load.cache_clear()


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pixels(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _reads_the_cache_second(name, root, first, monkeypatch):
    """A second load (as in a new process) reads the decoded cache, not torchvision's files."""
    sources._load.cache_clear()
    with monkeypatch.context() as m:
        m.setattr(sources, "_torchvision", lambda *a: pytest.fail(f"{name} decoded twice"))
        second = D.load(name, root)
    assert second is not first and second.classes == first.classes
    for part in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(second, part), getattr(first, part)), part
    assert (root / "cache" / f"{name}.safetensors").exists()


def _idx(array: np.ndarray) -> bytes:
    """The idx format of MNIST: magic 0x0000 0x08 (uint8) ndim, then each dimension big-endian."""
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.mark.parametrize("packed", [False, True])
def test_mnist_idx_files_load_exactly(tmp_path, monkeypatch, packed):
    """Unpacked idx files under MNIST/raw/ (what torchvision reads), or only the .gz files it
    downloads (then it unpacks them itself, after checking their md5)."""
    from torchvision.datasets import MNIST

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = {"train": _pixels(12, (28, 28), 0), "t10k": _pixels(5, (28, 28), 1)}
    labels = {"train": np.arange(12, dtype=np.uint8) % 10, "t10k": np.array([9, 0, 3, 3, 7], dtype=np.uint8)}
    resources = []
    for split in ("train", "t10k"):
        for kind, array in (("images-idx3", images[split]), ("labels-idx1", labels[split])):
            name = f"{split}-{kind}-ubyte"
            if packed:
                (raw / f"{name}.gz").write_bytes(gzip.compress(_idx(array)))
                resources.append((f"{name}.gz", _md5(raw / f"{name}.gz")))
            else:
                (raw / name).write_bytes(_idx(array))
    if packed:
        monkeypatch.setattr(MNIST, "resources", resources)

    data = D.load("mnist", tmp_path)
    assert data.train_x.shape == (12, 1, 28, 28) and data.train_x.dtype == torch.uint8 and data.shape == (1, 28, 28)
    assert np.array_equal(data.train_x[:, 0].numpy(), images["train"])
    assert np.array_equal(data.test_x[:, 0].numpy(), images["t10k"])
    assert data.train_y.dtype == torch.int64 and data.train_y.tolist() == labels["train"].tolist()
    assert data.test_y.tolist() == [9, 0, 3, 3, 7]
    assert data.num_classes == 10 and data.classes[0] == "0 - zero" and data.classes[9] == "9 - nine"
    assert (data.name, data.mean, data.std, data.augmentation) == ("mnist", (0.1307,), (0.3081,), "none")
    assert (data.in_channels, data.image_size) == (1, 28)
    _reads_the_cache_second("mnist", tmp_path, data, monkeypatch)


def test_cifar100_pickles_load_exactly_with_fine_labels(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = {"train": _pixels(8, (3, 32, 32), 2), "test": _pixels(4, (3, 32, 32), 3)}
    fine = {"train": [0, 99, 5, 42, 42, 7, 1, 63], "test": [99, 0, 12, 3]}
    names = [f"fine{i:02d}" for i in range(100)]
    for split in ("train", "test"):  # rows of 3072 bytes: the red plane, then green, then blue
        entry = {"data": images[split].reshape(len(fine[split]), 3072), "fine_labels": fine[split],
                 "coarse_labels": [f // 5 for f in fine[split]], "filenames": [f"{i}.png" for i in fine[split]]}
        (folder / split).write_bytes(pickle.dumps(entry))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names,
                                                "coarse_label_names": [f"coarse{i}" for i in range(20)]}))
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(folder / "meta")})

    data = D.load("cifar100", tmp_path)
    assert data.train_x.shape == (8, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert np.array_equal(data.train_x.numpy(), images["train"]) and np.array_equal(data.test_x.numpy(), images["test"])
    assert data.train_y.tolist() == fine["train"] and data.test_y.tolist() == fine["test"]  # fine, not coarse
    assert data.classes == tuple(names) and data.num_classes == 100
    assert data.mean == (0.5071, 0.4865, 0.4409) and data.std == (0.2673, 0.2564, 0.2762)
    assert data.augmentation == "crop+flip" and data.name == "cifar100"
    _reads_the_cache_second("cifar100", tmp_path, data, monkeypatch)


def test_svhn_mat_files_load_exactly_with_digit_zero_as_label_zero(tmp_path, monkeypatch):
    """The .mat files label digit 0 as 10; torchvision maps it to 0, so labels are the digits 0-9."""
    import scipy.io
    from torchvision.datasets import SVHN

    folder = tmp_path / "svhn"  # rewind's own folder for SVHN inside the data folder
    folder.mkdir()
    images = {"train": _pixels(7, (3, 32, 32), 4), "test": _pixels(3, (3, 32, 32), 5)}
    digits = {"train": [0, 1, 2, 9, 0, 5, 8], "test": [3, 0, 7]}
    split_list = {k: list(v) for k, v in SVHN.split_list.items()}
    for split in ("train", "test"):
        x = images[split].transpose(2, 3, 1, 0)  # the .mat layout: [H, W, C, N]
        y = np.array([[d or 10] for d in digits[split]], dtype=np.uint8)  # [N, 1], 10 for digit 0
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        split_list[split][2] = _md5(folder / f"{split}_32x32.mat")
    monkeypatch.setattr(SVHN, "split_list", split_list)

    data = D.load("svhn", tmp_path)
    assert np.array_equal(data.train_x.numpy(), images["train"]) and np.array_equal(data.test_x.numpy(), images["test"])
    assert data.train_y.tolist() == digits["train"] and data.test_y.tolist() == digits["test"]
    assert data.classes == tuple("0123456789") and data.num_classes == 10
    assert data.mean == (0.4377, 0.4438, 0.4728) and data.std == (0.1980, 0.2010, 0.1970)
    assert data.augmentation == "crop"  # no flip: a mirrored digit is another symbol
    _reads_the_cache_second("svhn", tmp_path, data, monkeypatch)

    sources._load.cache_clear()
    (tmp_path / "cache" / "svhn.safetensors").unlink()
    monkeypatch.setitem(__import__("sys").modules, "scipy.io", None)  # as without scipy installed
    with pytest.raises(UserError, match=r"^reading svhn needs scipy.io, which is not installed: pip install scipy$"):
        D.load("svhn", tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "svhn"])
def test_offline_download_is_one_line_naming_the_alternative(tmp_path, name):
    with pytest.raises(UserError) as e:
        D.load(name, tmp_path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"could not download {name} into {tmp_path}")
    if name == "cifar10":
        assert message.endswith("pass --data PATH to an image-folder copy such as cifar10-jpeg.tar.gz")
    else:
        assert f"put torchvision's files in {tmp_path}/{sources._FILES[name]}" in message
        assert message.endswith(f"--data synthetic:{name} for a stand-in")


def test_an_image_folder_named_like_a_dataset_is_fed_as_cifar10(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "mnist" / split / cls).mkdir(parents=True)
            Image.fromarray(_pixels(1, (28, 28), 6)[0], mode="L").save(tmp_path / "mnist" / split / cls / "0.png")
    data = D.load(str(tmp_path / "mnist"), tmp_path / "cache")
    assert data.name == "folder" and data.shape == (3, 28, 28)  # decoded as RGB, whatever the folder is called
    assert (data.mean, data.std, data.augmentation) == (D.SPECS["cifar10"].mean, D.SPECS["cifar10"].std, "crop+flip")


@pytest.mark.parametrize("name", ["mnist", "cifar100", "svhn"])
def test_synthetic_stand_ins_have_their_datasets_shape_classes_and_feeding(name):
    spec = D.SPECS[name]
    n = 10 * spec.num_classes
    data = D.load(f"synthetic:{name}", "unused", train_examples=n, test_examples=200)
    assert data.name == f"synthetic:{name}" and data.shape == spec.shape and data.num_classes == spec.num_classes
    assert (data.mean, data.std, data.augmentation) == (spec.mean, spec.std, spec.augmentation)
    assert len(data.train_y) == n and set(data.train_y.tolist()) == set(range(spec.num_classes))
    assert torch.equal(D.synthetic(n, 200, like=name).train_x, data.train_x)  # deterministic
    assert not torch.equal(D.synthetic(n, 200, like=name, seed=1).train_x, data.train_x)
    # Learnable: nearest class mean on the pixels, fit on train, is right on most test images.
    x, y = data.train_x.flatten(1).float(), data.train_y
    means = torch.stack([x[y == c].mean(0) for c in range(spec.num_classes)])
    predicted = torch.cdist(data.test_x.flatten(1).float(), means).argmin(1)
    assert (predicted == data.test_y).float().mean() > 0.9


def test_plain_synthetic_stays_cifar10_shaped_and_fed_as_cifar10():
    data = D.load("synthetic", "unused", train_examples=50, test_examples=10)
    assert data.name == "synthetic" and data.shape == (3, 32, 32) and data.num_classes == 10
    cifar = D.SPECS["cifar10"]
    assert data.mean == cifar.mean == (0.485, 0.456, 0.406) and data.std == cifar.std == (0.229, 0.224, 0.225)
    assert data.augmentation == "crop+flip"
    for name in ("synthetic:imagenet", "synthetic:cifar10"):  # one name for one dataset: that is `synthetic`
        with pytest.raises(UserError, match=f"unknown synthetic dataset '{name}': use synthetic .*synthetic:mnist"):
            D.load(name, "unused")


def test_run_hash_tells_the_datasets_apart():
    names = ["cifar10", "cifar100", "mnist", "svhn", "synthetic", "synthetic:mnist", "synthetic:cifar100",
             "synthetic:svhn"]
    assert [cfg.dataset_identity(n) for n in names] == names
    assert len({cfg.load(None, {"source": n}).hash() for n in names}) == len(names)


def _mnist_loader(augmentation=None, n=96):
    data = D.synthetic(n, 16, like="mnist")
    if augmentation is None:
        return data, D.DeviceLoader.from_dataset(data, 32, 0, 0, augment=True, device="cpu")
    return data, D.DeviceLoader(data.train_x, data.train_y, 32, 0, 0, augmentation=augmentation, mean=data.mean,
                                std=data.std)


def test_one_channel_28x28_batches_are_normalised_with_mnist_values():
    data, loader = _mnist_loader()
    assert loader.augmentation == "none" and loader.images is data.train_x  # MNIST's default: none, unpadded
    x, y = loader.batch(1)
    idx = loader.indices(1)
    assert x.shape == (32, 1, 28, 28) and torch.equal(y, data.train_y[idx])
    expected = (data.train_x[idx].float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x, expected, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels, normalisation for 1"):
        loader.normalize(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


def test_crop_pads_any_size_and_crop_without_flip_never_flips():
    data, crop = _mnist_loader("crop")
    _, both = _mnist_loader("crop+flip")
    offsets, flips = crop.augmentation_draws(0)
    assert torch.equal(offsets, both.augmentation_draws(0)[0]) and not flips.any()  # the same crops, no flip
    assert both.augmentation_draws(0)[1].any()
    x, _, idx = crop.raw_batch(2)
    assert x.shape == (32, 1, 28, 28)
    for k, i in enumerate(idx.tolist()):
        oy, ox = offsets[i].tolist()
        assert torch.equal(x[k], F.pad(data.train_x[i], (PAD,) * 4)[:, oy:oy + 28, ox:ox + 28])


def test_phases_keep_one_channel_images_and_their_normalisation():
    data, loader = _mnist_loader()
    schedule = P.PhaseSchedule(P.parse_list("blur(size=7):0it-1it,noise(seed=2):1it-2it,no-augmentation:2it-3it,"
                                            "rotation(seed=1):3it-4it,subset(fraction=0.5,seed=1):4it-", 3), 10)
    raw, _, _ = loader.raw_batch(0)
    blurred, _ = schedule.batch(loader, 0)
    assert blurred.shape == (32, 1, 28, 28) and torch.equal(blurred, loader.normalize(P.blur(raw.float(), 7)))
    noise, _ = schedule.batch(loader, 1)
    assert noise.shape == (32, 1, 28, 28) and abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
    assert torch.equal(schedule.batch(loader, 2)[0], loader.batch(2)[0])  # no augmentation is MNIST's default
    rotated, r = schedule.batch(loader, 3)
    raw, _, _ = loader.raw_batch(3)
    assert torch.equal(rotated[5], loader.normalize(torch.rot90(raw[5:6], int(r[5]), dims=(-2, -1)))[0])
    sub, _ = schedule.batch(loader, 4)
    keep = schedule.subset_indices(schedule.phases[-1], loader)
    assert sub.shape == (32, 1, 28, 28) and len(keep) == 48
    assert all(any(torch.equal(s, loader.normalize(data.train_x[keep])[j]) for j in range(48)) for s in sub[:4])


def test_fisher_trace_of_one_channel_images_matches_the_closed_form():
    """A softmax regression: grad_W log p(y|x) = (e_y - p) x^T, so each example adds ||e_y - p||^2 ||x||^2."""
    _, loader = _mnist_loader()
    x = loader.normalize(loader.originals()[:16])  # what the FisherLog hook feeds
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    trace = fisher_trace(model, x, seed=4)
    y = sample_labels(model, x, 4)
    with torch.no_grad():
        residual = (F.one_hot(y, 10) - F.softmax(model(x), -1)).double().square().sum(1)
    assert trace.per_parameter["1.weight"] == pytest.approx(float((residual * x.flatten(1).double().square().sum(1))
                                                                  .mean()), rel=1e-4)
    assert trace.per_parameter["1.bias"] == pytest.approx(float(residual.mean()), rel=1e-4)


def test_setup_feeds_its_dataset_as_the_dataset_says(tmp_path):
    from conftest import tiny_config
    from rewind.analysis.early_report import fixed_batch
    from rewind.train.trunk import Setup

    small = dict(train_examples=64, test_examples=16, data_dir=str(tmp_path))
    svhn = Setup.create(tiny_config(source="synthetic:svhn", **small))
    loader = svhn.state(svhn.new_model()).loader
    assert loader.augmentation == "crop" and loader.normalize.mean == D.SPECS["svhn"].mean
    assert svhn.train_loader(7, 8).order_seed == 7 and svhn.train_loader().aug_seed == svhn.config.train.aug_seed
    plain = Setup.create(tiny_config(source="synthetic:svhn", augment=False, **small))
    assert plain.train_loader().augmentation == "none"
    mnist = Setup.create(tiny_config(source="synthetic:mnist", **small))
    x, _ = fixed_batch(mnist, 8)
    assert x.shape == (8, 1, 28, 28) and mnist.train_loader().normalize.std == (0.3081,)
