"""datarun: train and score ML submissions on CV folds, by dropping folders into a spool."""

__version__ = "0.1.0"
