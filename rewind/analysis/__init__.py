"""Analyses of trained networks and archives: early-phase statistics, Fisher information, ..."""
