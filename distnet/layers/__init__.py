"""Keras-compatible layers (channels-last, float32 by default): each builds its weights for an input shape, runs
forward (`call`) and backward explicitly, and keeps its weights as views the model points into flat buffers.

Rooms: base.py (Layer, Weight, flat-buffer helpers), symbolic.py (symbolic tensors: the functional graph),
core, conv, pooling, global_pooling, padding, normalization, embedding, merge, recurrent/lstm/gru, wrappers,
preprocessing; kernels.py (im2col and window arithmetic shared by several layers).
May import: NumPy, activations, initializers, regularizers, backend; never models/, training/ or parallel/.
"""
from .base import Layer, Weight
from .conv import Conv1D, Conv2D, Convolution1D, Convolution2D
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Reshape
from .embedding import Embedding
from .global_pooling import (
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
)
from .gru import GRU
from .lstm import LSTM
from .merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from .normalization import BatchNormalization, LayerNormalization
from .padding import ZeroPadding1D, ZeroPadding2D
from .pooling import (
    AveragePooling1D,
    AveragePooling2D,
    AvgPool1D,
    AvgPool2D,
    MaxPool1D,
    MaxPool2D,
    MaxPooling1D,
    MaxPooling2D,
)
from .preprocessing import RandomFlip, RandomTranslation, Rescaling
from .recurrent import SimpleRNN
from .wrappers import Bidirectional, TimeDistributed

_REGISTRY = {cls.__name__: cls for cls in (
    InputLayer, Dense, Activation, Dropout, Flatten, Reshape, Conv1D, Conv2D, MaxPooling1D, MaxPooling2D,
    AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D,
    GlobalMaxPooling2D, ZeroPadding1D, ZeroPadding2D, BatchNormalization, LayerNormalization, Embedding,
    SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed, Add, Subtract, Multiply, Average, Maximum, Minimum,
    Concatenate, Rescaling, RandomFlip, RandomTranslation)}


def get_layer_class(class_name):
    if class_name not in _REGISTRY:
        raise ValueError(f"Unknown layer class {class_name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[class_name]


def register(cls):
    """Make a user-defined Layer subclass loadable by `load_model` (use as a class decorator)."""
    _REGISTRY[cls.__name__] = cls
    return cls


__all__ = [
    "GRU",
    "LSTM",
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "AvgPool1D",
    "AvgPool2D",
    "BatchNormalization",
    "Bidirectional",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Convolution1D",
    "Convolution2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "Input",
    "InputLayer",
    "Layer",
    "LayerNormalization",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "Multiply",
    "RandomFlip",
    "RandomTranslation",
    "Rescaling",
    "Reshape",
    "SimpleRNN",
    "Subtract",
    "TimeDistributed",
    "Weight",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "get_layer_class",
    "register",
]
