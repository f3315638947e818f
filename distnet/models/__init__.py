"""Model structure: which layers, how data flows through them, their weights, summaries, configs and files.

Rooms: model.py (Model: what every model shares), sequential.py (a stack of layers), saving.py (distnet's .npz
model and weights files). Training comes from distnet.training's Trainer, which Model inherits.
May import: layers/, training/, checkpoint; never parallel/ directly.
"""
from .model import Model
from .saving import load_model
from .sequential import Sequential

__all__ = ["Model", "Sequential", "load_model"]
