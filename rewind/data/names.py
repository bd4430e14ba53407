"""Dataset names without torch: what each named dataset is (image shape, classes, normalisation,
default augmentation), which sources name one, how a dataset counts in a run's identity, and the
holdout a setting may give. Settings are checked with these before anything loads torch;
`rewind.data.sources` decodes the data."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from rewind.errors import UserError

# A dataset's default training augmentation: random crop after zero padding by 4, with or
# without a random horizontal flip (`loader.DeviceLoader`).
AUGMENTATIONS = ("none", "crop", "crop+flip")
# How inputs are normalised: with the dataset's own mean and std, or with mean and std 0.5 in
# every channel (Ash & Adams's code: transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))).
NORMALIZATIONS = ("dataset", "half")


@dataclass(frozen=True)
class Spec:
    """What a named dataset is besides its pixels: image shape (C, H, W), class count, the
    per-channel mean and std of its pixels in [0, 1], and its default training augmentation."""

    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str


SPECS: dict[str, Spec] = {
    # The recipe's values (ImageNet's statistics, not CIFAR-10's own): existing archives and the
    # paper recipes were trained with them.
    "cifar10": Spec((3, 32, 32), 10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "crop+flip"),
    # CIFAR-100's training-set statistics, as in weiaicunzai/pytorch-cifar100
    # (conf/global_settings.py) and most CIFAR-100 code since.
    "cifar100": Spec((3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop+flip"),
    # The PyTorch MNIST example's values (pytorch/examples, mnist/main.py); no augmentation, as
    # in the lottery-ticket papers' LeNet runs.
    "mnist": Spec((1, 28, 28), 10, (0.1307,), (0.3081,), "none"),
    # SVHN's training-set statistics in common use (e.g. PyTorch Lightning Bolts' SVHN data
    # module: 0.4376821, 0.4437697, 0.47280442 / 0.19803012, 0.20101562, 0.19703614). Crop
    # without flip: a mirrored digit is another symbol.
    "svhn": Spec((3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), "crop"),
}


def is_named(source: str) -> bool:
    """Whether `source` names a dataset (torchvision or synthetic) rather than a path."""
    return source in SPECS or source == "synthetic" or source.startswith("synthetic:")


def holdout_fraction(text: str) -> Fraction | None:
    """'1/3' or '0.2' -> the fraction of the training set held out; '' -> None (no holdout)."""
    text = str(text).strip()
    if not text:
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        value = None
    if value is None or not 0 < value < 1:
        raise UserError(f"holdout must be a fraction in (0, 1) of the training set, written e.g. '1/3' or 0.2; "
                        f"got {text!r}")
    return value


def dataset_identity(source: str) -> str:
    """The dataset as it enters the run hash: a path counts by its name and size, not its location,
    so a moved copy still matches and another dataset of the same name does not. A named dataset
    (cifar10, mnist, synthetic:mnist, ...) counts by its name."""
    if is_named(source):
        return source
    path = Path(source).expanduser()
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return f"folder:{name}:{_size(path.resolve())}"


@functools.lru_cache(maxsize=None)
def _size(path: Path) -> int:
    """Bytes under `path`; cached, since a tree of 60,000 images takes a while to walk and the
    hash is asked for several times per command."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0  # missing: loading it says so
