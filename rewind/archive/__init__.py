"""Archives: run folders, manifests, checkpoints, metrics and other tables, locking and atomic writes."""
