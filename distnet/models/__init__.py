"""Model structure: which layers, how data flows through them, their weights, summaries, configs and files.

Rooms: model.py (the base Model: what every model shares), sequential.py (a stack of layers), functional.py
(Model(inputs, outputs): a graph of layers), saving.py (distnet's .npz
model and weights files). Training comes from distnet.training's Trainer, which Model inherits.
May import: layers/, training/, checkpoint; never parallel/ directly.
"""
from .functional import Model
from .saving import load_model
from .sequential import Sequential

__all__ = ["Model", "Sequential", "load_model"]
