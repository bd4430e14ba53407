"""Analyses over an archive: early-phase statistics, mask overlap, linear mode connectivity."""
