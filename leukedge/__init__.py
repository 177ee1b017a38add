"""leukedge: train, convert and deploy ALL blood-smear classifiers to edge boxes."""

from edge import __version__

__all__ = ["__version__"]
