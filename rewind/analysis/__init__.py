"""Analyses over archives: results tables and plots, early-phase statistics, Fisher trace, mode connectivity."""
