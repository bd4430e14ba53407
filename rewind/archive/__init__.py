"""Archives: run folders, manifests, checkpoints, metrics, locking and atomic writes."""
