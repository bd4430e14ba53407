"""Warm starting (Ash & Adams 2020; Berariu et al. 2021): `rewind warm-start`.

The studies live in `rewind.studies.plasticity` (the four arms of `--study arms`, the default, and
the sweeps of the other studies); this module keeps the entry points by their earlier names.
"""

from __future__ import annotations

from rewind.studies.plasticity import ARMS, layers_to_reset, run, start_from

__all__ = ["ARMS", "layers_to_reset", "run", "start_from", "_start"]


def _start(setup, arm, first_weights, config):
    """The arm's starting model from the first phase's weights (the config's lam, sigma and layers)."""
    return start_from(setup, arm, first_weights, config)
