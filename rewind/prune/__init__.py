"""Pruning: masks, magnitude pruning, random pruning and perturbations of rewind-point weights."""
