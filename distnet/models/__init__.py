"""Model structure: which layers, how data flows through them, their weights, summaries, configs and files.

Rooms: model.py (the base Model: what every model shares), sequential.py (a stack of layers), functional.py
(Model(inputs, outputs): a graph of layers), summary.py (Keras 3's summary table), saving.py (model and weights
files, by extension: distnet's .npz, or Keras 3's through keras_format.py (the .keras zip and the .weights.h5
layout), keras_config.py (Keras configs <-> distnet models, a per-layer table) and keras_graph.py (Keras's
functional graphs)). Training comes from
distnet.training's Trainer, which Model inherits.
May import: layers/, training/, checkpoint; never parallel/ directly.
"""
from .functional import Model
from .saving import load_model, model_from_json
from .sequential import Sequential

__all__ = ["Model", "Sequential", "load_model", "model_from_json"]
