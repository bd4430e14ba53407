import os
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rewind import data as D
from rewind.data.loader import PAD
from rewind.errors import UserError

CIFAR10 = D.SPECS["cifar10"]


def _cifar_loader(x, y, batch_size, order_seed, aug_seed, augment=True):
    """A loader fed as CIFAR-10 is: the recipe's normalisation, crop and flip."""
    return D.DeviceLoader(x, y, batch_size, order_seed, aug_seed, augmentation="crop+flip" if augment else "none",
                          mean=CIFAR10.mean, std=CIFAR10.std)


def _images(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 10


def _loader(order_seed=0, aug_seed=0, augment=True, n=300):
    x, y = _images(n)
    return _cifar_loader(x, y, 64, order_seed, aug_seed, augment)


def test_same_seeds_give_the_same_batches():
    a, b = _loader(), _loader()
    for it in (0, 3, 4, 5, 17):  # 5 iterations per epoch: crosses epochs
        xa, ya, ia = a.raw_batch(it)
        xb, yb, ib = b.raw_batch(it)
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)


def test_loaders_of_one_dataset_share_its_padded_device_copy():
    """Replicas, branches and arms each have a loader: the padded images exist once per dataset."""
    x, y = _images()
    a, b = (_cifar_loader(x, y, 64, seed, seed) for seed in (0, 1))
    assert a.images.data_ptr() == b.images.data_ptr() and a.images.shape == (300, 3, 40, 40)
    other = _cifar_loader(x.clone(), y, 64, 0, 0)  # other images: their own copy
    assert other.images.data_ptr() != a.images.data_ptr() and torch.equal(other.images, a.images)
    assert _cifar_loader(x, y, 64, 0, 0, augment=False).images is x  # on its device, unpadded: itself


def test_order_seed_changes_order_but_not_each_examples_augmentation():
    a, b = _loader(order_seed=0), _loader(order_seed=1)
    assert not torch.equal(a.indices(0), b.indices(0))
    # Gather the augmented view of every example in epoch 0 under both orders: identical per example.
    views_a, views_b = {}, {}
    for loader, views in ((a, views_a), (b, views_b)):
        for it in range(loader.iterations_per_epoch):
            x, _, idx = loader.raw_batch(it)
            views.update({int(i): x[k] for k, i in enumerate(idx)})
    assert sorted(views_a) == list(range(300))
    assert all(torch.equal(views_a[i], views_b[i]) for i in range(300))


def test_aug_seed_and_epoch_change_augmentation():
    a, b = _loader(aug_seed=0), _loader(aug_seed=1)
    assert not torch.equal(a.augmentation_draws(0)[0], b.augmentation_draws(0)[0])
    assert not torch.equal(a.augmentation_draws(0)[0], a.augmentation_draws(1)[0])


def test_each_epoch_visits_every_example_once_with_a_short_last_batch():
    loader = _loader()
    assert loader.iterations_per_epoch == 5
    seen = torch.cat([loader.indices(it) for it in range(5)])
    assert sorted(seen.tolist()) == list(range(300))
    assert len(loader.indices(4)) == 300 - 4 * 64


def test_crop_and_flip_match_the_recipe_math():
    loader = _loader()
    x, _, idx = loader.raw_batch(2)
    offsets, flips = loader.augmentation_draws(0)
    images, _ = _images()
    for k in range(len(idx)):
        i = int(idx[k])
        padded = F.pad(images[i], (PAD, PAD, PAD, PAD))  # zero padding 4
        oy, ox = offsets[i].tolist()
        crop = padded[:, oy:oy + 32, ox:ox + 32]
        if flips[i]:
            crop = crop.flip(-1)
        assert torch.equal(x[k], crop)
    assert 0.35 < flips.float().mean() < 0.65 and offsets.min() == 0 and offsets.max() == 2 * PAD


def test_no_augmentation_returns_the_images_themselves():
    loader = _loader(augment=False)
    x, _, idx = loader.raw_batch(1)
    assert torch.equal(x, _images()[0][idx])


def test_normalisation_uses_the_recipe_mean_and_std():
    norm = D.Normalizer.from_dataset(D.synthetic(10, 10), "cpu")  # CIFAR-10-shaped: fed as CIFAR-10 is
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = norm(x)
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[0, :, 0, 0], expected, atol=1e-6)


def _write_folder(root, n_per_class=3, classes=("cat", "dog"), size=32):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "test"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(n_per_class):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{i:04d}.png")
                arrays[(split, cls, i)] = arr
    return arrays


def test_image_folder_and_tar_give_the_same_exact_pixels(tmp_path):
    arrays = _write_folder(tmp_path / "ds")
    with tarfile.open(tmp_path / "ds.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    for source in (tmp_path / "ds", tmp_path / "ds.tar.gz"):
        data = D.load(str(source), tmp_path / "cache")
        assert data.classes == ("cat", "dog")
        assert data.train_x.shape == (6, 3, 32, 32) and data.train_x.dtype == torch.uint8
        assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1]
        assert np.array_equal(data.train_x[4].permute(1, 2, 0).numpy(), arrays[("train", "dog", 1)])
        assert np.array_equal(data.test_x[0].permute(1, 2, 0).numpy(), arrays[("test", "cat", 0)])


def test_an_archive_is_listed_once_for_a_plans_sizes_and_classes(tmp_path, monkeypatch):
    """A plan asks an archive's size and classes several times: it is read through once, and again
    only once it changes."""
    from rewind.data import sources

    _write_folder(tmp_path / "ds")
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    opened, real = [], tarfile.open
    monkeypatch.setattr(sources.tarfile, "open", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    answers = [sources.train_size(str(archive)), sources.train_size(str(archive), holdout="1/3"),
               sources.num_classes(str(archive))]
    assert answers == [6, 4, 2] and len(opened) == 1
    _write_folder(tmp_path / "more", classes=("cat", "dog", "eel"))
    with tarfile.open(archive, "w:gz") as tar:  # rewritten: three classes now
        tar.add(tmp_path / "more", arcname="ds")
    assert sources.num_classes(str(archive)) == 3


def test_decoded_cache_is_reused(tmp_path, monkeypatch):
    _write_folder(tmp_path / "ds")
    first = D.load(str(tmp_path / "ds"), tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "cache").glob("*.safetensors"))) == 1
    from rewind.data import sources

    assert D.load(str(tmp_path / "ds"), tmp_path / "cache") is first  # within a process: one object
    monkeypatch.setattr(sources, "_image_folder", lambda path: pytest.fail("decoded twice"))
    sources._load.cache_clear()  # as in a new process: read from the cache file, not decoded again
    second = D.load(str(tmp_path / "ds"), tmp_path / "cache")
    assert second is not first
    assert torch.equal(first.train_x, second.train_x) and second.classes == first.classes


def test_a_changed_folder_is_read_again_in_the_same_process(tmp_path):
    _write_folder(tmp_path / "ds")
    first = D.load(str(tmp_path / "ds"), tmp_path / "cache")
    image = next((tmp_path / "ds" / "train").rglob("*.png"))
    Image.new("RGB", (32, 32), (255, 0, 0)).save(image)
    os.utime(image, (1, 1))  # another size or time: another fingerprint
    assert not torch.equal(D.load(str(tmp_path / "ds"), tmp_path / "cache").train_x, first.train_x)


def test_missing_dataset_says_how_to_point_at_one(tmp_path):
    with pytest.raises(UserError, match=r"not found: pass --data cifar10 .* --data PATH"):
        D.load(str(tmp_path / "nope.tar.gz"), tmp_path / "cache")


def test_folder_without_train_and_test_is_refused(tmp_path):
    (tmp_path / "ds" / "images" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="train/<class>/ and test/<class>/"):
        D.load(str(tmp_path / "ds"), tmp_path / "cache")


def test_subsets_are_seeded_and_fixed(tmp_path):
    _write_folder(tmp_path / "ds", n_per_class=10)
    from rewind.data import sources

    a = D.load(str(tmp_path / "ds"), tmp_path / "cache", train_examples=7, test_examples=5)
    sources._load.cache_clear()  # drawn again, as in another process
    b = D.load(str(tmp_path / "ds"), tmp_path / "cache", train_examples=7, test_examples=5)
    assert b is not a
    c = D.load(str(tmp_path / "ds"), tmp_path / "cache", train_examples=7, subset_seed=1)
    assert len(a.train_y) == 7 and len(a.test_y) == 5
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)


def test_synthetic_is_deterministic_and_any_size():
    a, b = D.synthetic(123, 45), D.synthetic(123, 45)
    assert a.train_x.shape == (123, 3, 32, 32) and a.test_x.shape == (45, 3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert set(a.train_y.tolist()) == set(range(10))


@pytest.mark.skipif(not __import__("conftest").SHARED_CIFAR.exists(), reason="shared CIFAR-10 archive not present")
def test_shared_cifar10_archive_decodes_to_cifar10(tmp_path_factory):
    from conftest import SHARED_CIFAR

    data = D.load(str(SHARED_CIFAR), tmp_path_factory.mktemp("cache"))
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.classes[:3] == ("airplane", "automobile", "bird")
    assert torch.bincount(data.train_y).tolist() == [5000] * 10
    mean = data.train_x.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.003)


def test_setups_of_one_dataset_share_it_on_the_device(tmp_path):
    """Every Setup of a study (critical-period arms, replicates) reads one dataset object, so its
    padded device copy for training exists once."""
    from conftest import tiny_config
    from rewind.train.trunk import Setup

    a, b = (Setup.create(tiny_config(data_dir=str(tmp_path), order_seed=s, lr=lr)) for s, lr in ((0, 0.1), (1, 0.2)))
    assert a.data is b.data
    la, lb = a.state(a.new_model()).loader, b.state(b.new_model()).loader
    assert la.images.data_ptr() == lb.images.data_ptr() and la.order_seed != lb.order_seed
