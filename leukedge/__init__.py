"""leukedge: train, convert and deploy ALL blood-smear classifiers to edge boxes."""

__version__ = "0.1.0"
