"""Keras-style dataset access: `from distnet.datasets import mnist; (x, y), (xt, yt) = mnist.load_data()`."""
import types

from .data.datasets import (load_digits, load_mnist, load_mnist_csv, load_npz, load_pima, read_csv, read_idx,
                            train_test_split)

mnist = types.SimpleNamespace(load_data=load_mnist)
pima = types.SimpleNamespace(load_data=load_pima)
digits = types.SimpleNamespace(load_data=load_digits)

__all__ = ["mnist", "pima", "digits", "load_mnist", "load_mnist_csv", "load_pima", "load_digits", "load_npz",
           "read_idx", "read_csv", "train_test_split"]
