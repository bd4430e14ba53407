"""Data: sources and their decoded cache, the device-resident loader."""

from rewind.data.loader import DeviceLoader, Normalizer, device_copy
from rewind.data.sources import Dataset, load, synthetic

__all__ = ["Dataset", "DeviceLoader", "Normalizer", "device_copy", "load", "synthetic"]
