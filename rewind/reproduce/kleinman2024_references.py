"""Reference values for kleinman2024's figures: only values the paper states or the authors' code gives
when run on its settings, each row with its source. Keyed by figure; each row holds the figure's
coordinates and the value, in the columns of the figure's CSV. None is made up: a figure with no
known value has no entry."""

from __future__ import annotations

REFERENCES: dict[str, list[dict]] = {}
