"""Data: sources and their decoded cache, the device-resident loader."""

from rewind.data.loader import DeviceLoader, Normalizer, device_copy
from rewind.data.sources import AUGMENTATIONS, SPECS, Dataset, Spec, load, synthetic

__all__ = ["AUGMENTATIONS", "SPECS", "Dataset", "DeviceLoader", "Normalizer", "Spec", "device_copy", "load",
           "synthetic"]
