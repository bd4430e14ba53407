"""Dataset sources, each decoded once into uint8 tensors and cached as one safetensors file.

- `cifar10`: torchvision's CIFAR-10, downloaded into the data folder.
- a path: an image-folder tree, or a .tar.gz of one, holding train/<class>/ and test/<class>/
  (for example the shared cifar10-jpeg.tar.gz). Classes are sorted by name, files by name.
- `synthetic`: deterministic class-conditional images a ResNet learns in a few hundred steps.
"""

from __future__ import annotations

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
from rewind.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_VERSION = 1


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 [N, C, H, W] and labels as int64 [N], on the CPU."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load(source: str, data_dir: str | Path, train_examples: int = 0, test_examples: int = 0,
         subset_seed: int = 0) -> Dataset:
    """The dataset named by `source`, with the configured seeded subsets applied.

    One object per process while the source is unchanged (its tensors are never written), so
    every Setup of a study shares one dataset, and one copy of it on the device."""
    root = Path(data_dir).expanduser()
    if source in ("synthetic", "cifar10"):
        return _load(source, root, source, train_examples, test_examples, subset_seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"dataset {source!r} not found: pass --data cifar10 (downloads), --data synthetic, "
            "or --data PATH to an image-folder tree or .tar.gz with train/<class>/ and test/<class>/"
        )
    # The fingerprint (sizes and times of the files) in the key: a changed folder is read again.
    return _load(source, root, f"{path.name}-{_fingerprint(path)}", train_examples, test_examples, subset_seed)


@functools.lru_cache(maxsize=2)
def _load(source: str, root: Path, key: str, train_examples: int, test_examples: int, subset_seed: int) -> Dataset:
    if source == "synthetic":
        return synthetic(train_examples or 5000, test_examples or 1000)
    if source == "cifar10":
        data = _cached(root, key, lambda: _cifar10(root))
    else:
        data = _cached(root, key, lambda: _image_folder(Path(source).expanduser()))
    return _subset(data, train_examples, test_examples, subset_seed)


def _subset(data: Dataset, n_train: int, n_test: int, seed: int) -> Dataset:
    def pick(x, y, n, tag):
        if not n or n >= len(y):
            return x, y
        idx = torch.randperm(len(y), generator=seeds.generator(seed, tag))[:n].sort().values
        return x[idx], y[idx]

    train_x, train_y = pick(data.train_x, data.train_y, n_train, "train-subset")
    test_x, test_y = pick(data.test_x, data.test_y, n_test, "test-subset")
    return Dataset(train_x, train_y, test_x, test_y, data.classes)


def _fingerprint(path: Path) -> str:
    """Changes when the source changes: size and mtime of the archive, or of every file in the tree."""
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def _cached(root: Path, key: str, decode) -> Dataset:
    """Decode once; later loads read one safetensors file (well under a second for CIFAR-10)."""
    cache = root / "cache" / f"{key}.safetensors"
    if cache.exists():
        try:
            t = load_file(cache)
            classes = tuple(bytes(t.pop("classes").tolist()).decode().split("\n"))
            return Dataset(t["train_x"], t["train_y"], t["test_x"], t["test_y"], classes)
        except (SafetensorError, KeyError, OSError, UnicodeDecodeError):
            pass  # a damaged cache is only a cache: decode again and replace it
    data = decode()
    classes = torch.tensor(list("\n".join(data.classes).encode()), dtype=torch.uint8)
    blob = save({"train_x": data.train_x, "train_y": data.train_y, "test_x": data.test_x,
                 "test_y": data.test_y, "classes": classes})
    write_bytes(cache, blob)
    return data


def _cifar10(root: Path) -> Dataset:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(root, train=True, download=True)
        test = CIFAR10(root, train=False, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, ... when offline
        raise UserError(
            f"could not download CIFAR-10 into {root} ({type(e).__name__}: {e}); without internet, pass "
            "--data PATH to an image-folder copy such as cifar10-jpeg.tar.gz"
        ) from None

    def tensors(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    return Dataset(*tensors(train), *tensors(test), tuple(train.classes))


def _decode(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise UserError(f"cannot decode image {where}: {e}; remove or replace that file") from None


def _image_folder(path: Path) -> Dataset:
    """Read train/<class>/* and test/<class>/* from a folder or a tar archive, in name order."""
    items: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}

    def add(rel: str, read):
        parts = Path(rel).parts
        parts = parts[parts.index("train"):] if "train" in parts else parts[parts.index("test"):] if "test" in parts else ()
        if len(parts) == 3 and parts[2].lower().endswith(IMAGE_SUFFIXES):
            items[parts[0]].setdefault(parts[1], []).append((parts[2], read()))

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
            raise UserError(f"cannot read dataset archive {path}: {e}; is it a complete .tar.gz?") from None

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

    return Dataset(*split("train"), *split("test"), tuple(classes))


def synthetic(n_train: int = 5000, n_test: int = 1000, num_classes: int = 10, size: int = 32, seed: int = 0) -> Dataset:
    """Each class is a smooth random colour pattern; examples add per-example noise and a random shift.

    Learnable (a ResNet-20 reaches high accuracy in a few hundred steps) but not trivial: the
    shift and noise make augmentation matter, and the classes overlap a little.
    """
    g = seeds.generator(seed, "synthetic")
    low = torch.rand(num_classes, 3, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)

    def make(n: int, tag: str) -> tuple[torch.Tensor, torch.Tensor]:
        gg = seeds.generator(seed, tag)
        y = torch.randint(0, num_classes, (n,), generator=gg)
        x = protos[y] + 0.25 * torch.randn(n, 3, size, size, generator=gg)
        shifts = torch.randint(-3, 4, (n, 2), generator=gg)
        for i in range(n):
            x[i] = torch.roll(x[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    return Dataset(*make(n_train, "synthetic-train"), *make(n_test, "synthetic-test"),
                   tuple(f"class{i}" for i in range(num_classes)))


__all__ = ["Dataset", "load", "synthetic"]
