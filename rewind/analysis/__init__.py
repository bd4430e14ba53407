"""Analyses over archives: results tables and plots, the early-phase report, mask overlap, mode connectivity
(the online statistics and Fisher trace are logged by `rewind.train.early` and `rewind.train.fisher`)."""
