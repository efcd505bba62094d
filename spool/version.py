"""datarun's version: the one number a runner compares with its master's."""

__version__ = "0.1.0"
