"""Dataset sources, each decoded once into uint8 tensors and cached as one safetensors file.

- `cifar10`, `cifar100`, `mnist`, `svhn`: torchvision's copies, downloaded into the data folder
  (SVHN: its train and test splits, labels 0-9 as torchvision gives them; its 'extra' split is
  not used).
- a path: an image-folder tree, or a .tar.gz of one, holding train/<class>/ and test/<class>/
  (for example the shared cifar10-jpeg.tar.gz). Classes are sorted by name, files by name.
  A folder's name says nothing about its contents: it is fed as CIFAR-10 is (RGB, CIFAR-10's
  normalisation, crop and flip), whatever it is called.
- `synthetic`: deterministic class-conditional images a ResNet learns in a few hundred steps,
  CIFAR-10-shaped; `synthetic:NAME` (e.g. `synthetic:mnist`) the same kind of images with the
  shape, class count, normalisation and augmentation of dataset NAME, for tests and smoke runs.

Every dataset carries how it is fed (`Dataset.mean`, `std`, `augmentation`): loaders and
normalisers are built from it (`DeviceLoader.from_dataset`, `Normalizer.from_dataset`).

Over 400 lines, and one idea: every source decoded into the one cached form, beside the others, so
that they are fed alike (their names, sizes and classes, read without torch, are `names`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from rewind import seeds
from rewind.archive.atomic import write_bytes
from rewind.data.names import (AUGMENTATIONS, NORMALIZATIONS, SPECS, Spec, holdout_fraction,  # noqa: F401
                                 is_named)
from rewind.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_VERSION = 1
# Where in the data folder torchvision reads each dataset's files: said when a download fails, so
# that files copied from elsewhere can be put in place.
_FILES = {
    "cifar100": "cifar-100-python/ (train, test, meta)",
    "mnist": "MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
             "t10k-labels-idx1-ubyte)",
    "svhn": "svhn/ (train_32x32.mat, test_32x32.mat)",
}


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 [N, C, H, W] and labels as int64 [N], on the CPU, and how they are fed:
    `mean` and `std` per channel (of pixels scaled to [0, 1]) for normalisation, and the default
    training `augmentation` (one of AUGMENTATIONS). `name` is the source it came from
    ('cifar10', 'synthetic:mnist', 'folder', ...)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str

    def __post_init__(self) -> None:
        channels = self.train_x.shape[1]
        if not len(self.mean) == len(self.std) == channels:
            raise ValueError(f"{self.name}: {channels} channels but mean {self.mean} and std {self.std}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"{self.name}: augmentation {self.augmentation!r} is not one of {AUGMENTATIONS}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def in_channels(self) -> int:
        return self.shape[0]

    @property
    def image_size(self) -> int:
        """The image height (equal to the width for every named dataset; an image folder may differ)."""
        return self.shape[1]


def _described(parts: tuple, name: str, spec: Spec) -> Dataset:
    """A Dataset of (train_x, train_y, test_x, test_y, classes) fed as `spec` says."""
    return Dataset(*parts, name=name, mean=spec.mean, std=spec.std, augmentation=spec.augmentation)


def load(source: str, data_dir: str | Path, train_examples: int = 0, test_examples: int = 0,
         subset_seed: int = 0, holdout: str = "", fraction: float = 1.0, fraction_seed: int = 0,
         normalize: str = "dataset") -> Dataset:
    """The dataset named by `source`, as a run sees it: the seeded `train_examples` subset of the
    training set; with `holdout` (e.g. '1/3') that part of it held out and scored as the test split
    in place of the official test set; `test_examples` of the test split; a seeded `fraction` of
    what is left to train on (its epochs are its own: `train_size` counts it); and `normalize`
    ('half': mean and std 0.5 per channel instead of the dataset's own).

    One object per process while the source, the subsets and the holdout are unchanged (its tensors
    are never written), so every Setup of a study shares one dataset, and one copy of it on the
    device; a `fraction` is a new view (and device copy) per call."""
    root = Path(data_dir).expanduser()
    stand_ins = [name for name in SPECS if name != "cifar10"]  # plain `synthetic` is CIFAR-10's
    if source.startswith("synthetic:") and source.removeprefix("synthetic:") not in stand_ins:
        raise UserError(f"unknown synthetic dataset {source!r}: use synthetic (CIFAR-10-shaped) or "
                        f"{', '.join('synthetic:' + name for name in stand_ins)}")
    if is_named(source):
        key = source
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(
                f"dataset {source!r} not found: pass --data cifar10 | cifar100 | mnist | svhn (torchvision downloads "
                "them), --data synthetic[:NAME], or --data PATH to an image-folder tree or .tar.gz with train/<class>/ "
                "and test/<class>/"
            )
        # The fingerprint (sizes and times of the files) in the key: a changed folder is read again.
        key = f"{path.name}-{_fingerprint(path)}"
    data = _load(source, root, key, train_examples, test_examples, subset_seed, holdout)
    if fraction < 1.0:
        keep = subset_indices(len(data.train_y), fraction, fraction_seed)
        data = dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])
    if normalize == "half":
        data = dataclasses.replace(data, mean=(0.5,) * data.in_channels, std=(0.5,) * data.in_channels)
    return data


def subset_indices(n: int, fraction: float, seed: int) -> torch.Tensor:
    """The sorted indices of a seeded `fraction` of `n` examples (`subset_size` of them): the same
    seed gives nested subsets. A run's `fraction` and a `subset` data phase draw alike."""
    perm = torch.randperm(n, generator=seeds.generator(seed, "phase-subset"))
    return perm[:subset_size(fraction, n)].sort().values


def subset_size(fraction: float, examples: int) -> int:
    """How many of `examples` a seeded fraction keeps."""
    return max(1, round(fraction * examples))


def fit_size(n: int, holdout: str) -> int:
    """How many of `n` training examples are left to fit once `holdout` is held out: floor(n (1 - h)),
    as Ash & Adams's code keeps int(len * 2/3) of CIFAR-10's 50,000 (33,333)."""
    h = holdout_fraction(holdout)
    return n if h is None else int(n * (1 - h))


# Training-set sizes of the torchvision datasets, for plans made before (or without) a download.
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "mnist": 60_000, "svhn": 73_257}


def train_size(source: str, train_examples: int = 0, holdout: str = "", fraction: float = 1.0) -> int:
    """How many training examples a run on `source` uses, read without decoding or downloading
    anything (a plan's epochs in iterations): the subset, less the holdout, times the fraction
    (as `load` draws them)."""
    n = fit_size(_source_size(source, train_examples), holdout)
    return subset_size(fraction, n) if fraction < 1.0 else n


def _source_size(source: str, train_examples: int = 0) -> int:
    """The size of the training set before a holdout: the subset size, a named dataset's size, or
    the number of images under train/<class>/ in an image folder or archive."""
    if source == "synthetic" or source.startswith("synthetic:"):
        return train_examples or 5000
    if train_examples:  # a subset, never more than the whole set
        return min(train_examples, _source_size(source))
    if source in TRAIN_SIZES:
        return TRAIN_SIZES[source]
    return sum(1 for n in _file_names(source) if _split_of(n) == "train")


def num_classes(source: str) -> int:
    """How many classes a run on `source` has, read without decoding or downloading anything."""
    if source.startswith("synthetic:"):
        return SPECS[source.removeprefix("synthetic:")].num_classes
    if source == "synthetic" or source in SPECS:
        return SPECS.get(source, SPECS["cifar10"]).num_classes
    return len({Path(n).parts[Path(n).parts.index("train") + 1] for n in _file_names(source)
                if _split_of(n) == "train"})


def _file_names(source: str) -> tuple[str, ...]:
    """The paths of the files in the image-folder tree or archive at `source`."""
    path = Path(source).expanduser()
    if not path.exists():
        load(source, ".")  # the one-line message for a missing dataset
    if path.is_dir():
        return tuple(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    st = path.stat()
    return _archive_names(path.resolve(), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _archive_names(path: Path, size: int, mtime_ns: int) -> tuple[str, ...]:
    """An archive's file names, read once per command while it is unchanged (size, mtime): a plan asks
    for sizes and classes several times, and reading 60,000 images' headers takes seconds."""
    try:
        with tarfile.open(path) as tar:
            return tuple(m.name for m in tar if m.isfile())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _unreadable_archive(path, e) from None


def _unreadable_archive(path: Path, e: BaseException) -> UserError:
    why = "it is not a tar archive (plain, gzip, bzip2 or xz)" if isinstance(e, tarfile.ReadError) else \
        " ".join(str(e).split())[:120]
    return UserError(f"cannot read dataset archive {path}: {why}; is it a complete .tar.gz with train/<class>/ "
                     "and test/<class>/?")


def _split_of(rel: str) -> str | None:
    """'train' or 'test' for an image at <split>/<class>/<file> (under any leading folders), else None."""
    parts = Path(rel).parts
    for split in ("train", "test"):
        if split in parts:
            rest = parts[parts.index(split):]
            if len(rest) == 3 and rest[2].lower().endswith(IMAGE_SUFFIXES):
                return split
    return None


@functools.lru_cache(maxsize=2)
def _load(source: str, root: Path, key: str, train_examples: int, test_examples: int, subset_seed: int,
          holdout: str = "") -> Dataset:
    if source == "synthetic" or source.startswith("synthetic:"):
        like = source.partition(":")[2] or "cifar10"
        data = synthetic(train_examples or 5000, test_examples or 1000, like=like)
        return _subset(data, 0, test_examples, subset_seed, holdout)  # drawn at its sizes: only the holdout
    if source in SPECS:
        data = _described(_cached(root, key, lambda: _torchvision(source, root)), source, SPECS[source])
    else:
        data = _described(_cached(root, key, lambda: _image_folder(Path(source).expanduser())), "folder",
                          SPECS["cifar10"])
    return _subset(data, train_examples, test_examples, subset_seed, holdout)


def _subset(data: Dataset, n_train: int, n_test: int, seed: int, holdout: str = "") -> Dataset:
    """The seeded `n_train` of the training set; with `holdout`, its held-out part (drawn from
    (seed, 'holdout')) becomes the test split; then the seeded `n_test` of the test split."""
    def pick(x, y, n, tag):
        if not n or n >= len(y):
            return x, y
        idx = torch.randperm(len(y), generator=seeds.generator(seed, tag))[:n].sort().values
        return x[idx], y[idx]

    train_x, train_y = pick(data.train_x, data.train_y, n_train, "train-subset")
    test_x, test_y = data.test_x, data.test_y
    if holdout_fraction(holdout) is not None:
        order = torch.randperm(len(train_y), generator=seeds.generator(seed, "holdout"))
        k = fit_size(len(train_y), holdout)
        fit, held = order[:k].sort().values, order[k:].sort().values
        test_x, test_y, train_x, train_y = train_x[held], train_y[held], train_x[fit], train_y[fit]
    test_x, test_y = pick(test_x, test_y, n_test, "test-subset")
    return dataclasses.replace(data, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)


def _fingerprint(path: Path) -> str:
    """Changes when the source changes: size and mtime of the archive, or of every file in the tree."""
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def _cached(root: Path, key: str, decode) -> tuple:
    """(train_x, train_y, test_x, test_y, classes), decoded once; later loads read one safetensors
    file (well under a second for CIFAR-10). How the data is fed is not cached: it is the source's."""
    cache = root / "cache" / f"{key}.safetensors"
    if cache.exists():
        try:
            t = load_file(cache)
            classes = tuple(bytes(t.pop("classes").tolist()).decode().split("\n"))
            return t["train_x"], t["train_y"], t["test_x"], t["test_y"], classes
        except (SafetensorError, KeyError, OSError, UnicodeDecodeError):
            pass  # a damaged cache is only a cache: decode again and replace it
    train_x, train_y, test_x, test_y, classes = decode()
    names = torch.tensor(list("\n".join(classes).encode()), dtype=torch.uint8)
    blob = save({"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "classes": names})
    write_bytes(cache, blob)
    return train_x, train_y, test_x, test_y, classes


def _torchvision(name: str, root: Path) -> tuple:
    """The train and test splits of torchvision's copy of `name`, downloaded into `root` if missing."""
    from torchvision import datasets as tv

    make = {
        "cifar10": lambda train: tv.CIFAR10(root, train=train, download=True),
        "cifar100": lambda train: tv.CIFAR100(root, train=train, download=True),
        "mnist": lambda train: tv.MNIST(root, train=train, download=True),
        # Its own folder: torchvision keeps SVHN's .mat files directly under the root it is given.
        "svhn": lambda train: tv.SVHN(root / "svhn", split="train" if train else "test", download=True),
    }[name]
    try:
        train, test = make(True), make(False)
    except ImportError as e:  # SVHN's .mat files are read with scipy
        module = e.name or "scipy"
        raise UserError(f"reading {name} needs {module}, which is not installed: "
                        f"pip install {module.split('.')[0]}") from None
    except Exception as e:  # torchvision raises URLError, RuntimeError, ... when offline
        alternative = ("pass --data PATH to an image-folder copy such as cifar10-jpeg.tar.gz" if name == "cifar10"
                       else f"put torchvision's files in {root}/{_FILES[name]} or pass --data synthetic:{name} for "
                            "a stand-in")
        why = " ".join(f"{type(e).__name__}: {e}".split())  # torchvision's messages span lines
        raise UserError(f"could not download {name} into {root} ({why[:300]}); without internet, "
                        f"{alternative}") from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "mnist":  # uint8 [N, 28, 28] and int64 [N] tensors
            return ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)
        if name == "svhn":  # uint8 [N, C, H, W] and int64 [N] arrays, digit 0 already label 0
            return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels.astype(np.int64))
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # CIFAR: [N, H, W, C]
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    classes = tuple(str(d) for d in range(10)) if name == "svhn" else tuple(train.classes)
    return *tensors(train), *tensors(test), classes


def _decode(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL's messages hold the repr of the buffer it was given
        raise UserError(f"cannot decode image {where} ({type(e).__name__}: not an image PIL can read); "
                        "remove or replace that file") from None


def _image_folder(path: Path) -> tuple:
    """Read train/<class>/* and test/<class>/* from a folder or a tar archive, in name order."""
    items: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}

    def add(rel: str, read):
        split = _split_of(rel)
        if split:
            parts = Path(rel).parts
            parts = parts[parts.index(split):]
            items[split].setdefault(parts[1], []).append((parts[2], read()))

    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                add(str(p.relative_to(path)), p.read_bytes)
    else:
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile():
                        add(member.name, lambda m=member: tar.extractfile(m).read())
        except (tarfile.TarError, EOFError, OSError) as e:
            raise _unreadable_archive(path, e) from None

    classes = sorted(items["train"])
    if not classes or sorted(items["test"]) != classes:
        raise UserError(
            f"{path} must hold train/<class>/ and test/<class>/ folders with the same classes; "
            f"found train classes {classes or 'none'} and test classes {sorted(items['test']) or 'none'}"
        )

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, shape = [], [], None
        for label, cls in enumerate(classes):
            for fname, blob in sorted(items[name][cls]):
                arr = _decode(blob, f"{name}/{cls}/{fname} in {path}")
                if shape is None:
                    shape = arr.shape
                elif arr.shape != shape:
                    raise UserError(
                        f"image {name}/{cls}/{fname} in {path} is {arr.shape[1]}x{arr.shape[0]}, others are "
                        f"{shape[1]}x{shape[0]}; resize the dataset to one size first"
                    )
                images.append(arr)
                labels.append(label)
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(labels, dtype=torch.int64)

    return *split("train"), *split("test"), tuple(classes)


def synthetic(n_train: int = 5000, n_test: int = 1000, num_classes: int | None = None, size: int | None = None,
              seed: int = 0, like: str = "cifar10") -> Dataset:
    """Each class is a smooth random pattern; examples add per-example noise and a random shift.

    Learnable (a ResNet-20 reaches high accuracy in a few hundred steps) but not trivial: the
    shift and noise make augmentation matter, and the classes overlap a little. `like` names
    the dataset whose channels, size, class count, normalisation and augmentation it takes
    (`num_classes` and `size` override those); like='cifar10' is plain `synthetic`.
    """
    spec = SPECS[like]
    channels, num_classes, size = spec.shape[0], num_classes or spec.num_classes, size or spec.shape[1]
    named = () if like == "cifar10" else (like,)  # plain synthetic draws the streams it always drew
    g = seeds.generator(seed, "synthetic", *named)
    low = torch.rand(num_classes, channels, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)

    def make(n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        gg = seeds.generator(seed, f"synthetic-{split}", *named)
        y = torch.randint(0, num_classes, (n,), generator=gg)
        x = protos[y] + 0.25 * torch.randn(n, channels, size, size, generator=gg)
        shifts = torch.randint(-3, 4, (n, 2), generator=gg)
        for i in range(n):
            x[i] = torch.roll(x[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    parts = (*make(n_train, "train"), *make(n_test, "test"), tuple(f"class{i}" for i in range(num_classes)))
    return _described(parts, "synthetic" if like == "cifar10" else f"synthetic:{like}", spec)


__all__ = ["AUGMENTATIONS", "NORMALIZATIONS", "SPECS", "Dataset", "Spec", "is_named", "load", "subset_indices",
           "subset_size", "synthetic"]
