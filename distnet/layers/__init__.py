"""Keras-compatible layers (channels-last, float32 by default)."""
from .base import Layer, Weight
from .conv import Conv2D
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Reshape
from .normalization import BatchNormalization
from .pooling import (AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, GlobalAvgPool2D, MaxPool2D,
                      MaxPooling2D)
from .preprocessing import RandomFlip, RandomTranslation, Rescaling

Convolution2D = Conv2D

_REGISTRY = {cls.__name__: cls for cls in (InputLayer, Dense, Activation, Dropout, Flatten, Reshape, Conv2D,
                                           MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
                                           BatchNormalization, Rescaling, RandomFlip, RandomTranslation)}


def get_layer_class(class_name):
    if class_name not in _REGISTRY:
        raise ValueError(f"Unknown layer class {class_name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[class_name]


def register(cls):
    """Make a user-defined Layer subclass loadable by `load_model` (use as a class decorator)."""
    _REGISTRY[cls.__name__] = cls
    return cls


__all__ = ["Layer", "Weight", "Input", "InputLayer", "Dense", "Activation", "Dropout", "Flatten", "Reshape",
           "Conv2D", "Convolution2D", "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D",
           "GlobalAveragePooling2D", "GlobalAvgPool2D", "BatchNormalization", "Rescaling", "RandomFlip",
           "RandomTranslation", "get_layer_class", "register"]
