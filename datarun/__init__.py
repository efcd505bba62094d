"""datarun: train and score ML submissions on CV folds, by dropping folders into a spool."""

from spool.version import __version__

__all__ = ["__version__"]
