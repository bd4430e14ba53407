"""Data: sources and their decoded cache, the device-resident loader, phases.

`names` (datasets) and `phase` (phases as written) load without torch: settings are checked with
them. The names below come from `loader` and `sources`, which load torch, on first use (PEP 562),
so that importing `rewind.data.names` does not load them.
"""

_FROM = {"DeviceLoader": "loader", "Normalizer": "loader", "device_copy": "loader", "AUGMENTATIONS": "sources",
         "SPECS": "sources", "Dataset": "sources", "Spec": "sources", "load": "sources", "synthetic": "sources"}

__all__ = sorted(_FROM)


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module 'rewind.data' has no attribute {name!r}")
    from rewind.data import loader, sources

    return getattr(loader if _FROM[name] == "loader" else sources, name)
