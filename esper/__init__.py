"""Esper: morphogenetic neural networks that grow seeds during training, steered by Tamiyo."""

__version__ = "0.1.0"
