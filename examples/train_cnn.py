"""Usage: python examples/train_cnn.py [--epochs 10] [--batch-size 32] [--data DIR] [--test-data DIR] [--synthetic]
       mpirun -n 8 python examples/train_cnn.py

The Keras tutorial CNN (Conv2D 32-64-128 + pooling, Dense 128, softmax) on real MNIST: by default the bundled
5,000 training images and the full 10,000-image test set. --data DIR reads the full MNIST IDX files from DIR,
or, when DIR is a packed directory (`distnet-data pack ...`: it holds index.json), streams its shards: each
worker reads only its slice of every batch, never the whole set (--test-data DIR: a packed test set).
Any (H, W, C) data works; --synthetic trains on random CIFAR-shaped 32x32x3 data, for speed runs.
Under mpirun (or distnet-launch) the same script trains data-parallel; only rank 0 prints.
"""
import argparse
import os

import numpy as np

import distnet
from distnet.data import ShardedDataset
from distnet.datasets import mnist
from distnet.layers import Conv2D, Dense, Flatten, MaxPooling2D, Reshape
from distnet.models import Sequential
from distnet.utils import to_categorical


def packed(directory):
    return directory is not None and os.path.exists(os.path.join(directory, "index.json"))


def load(args):
    if packed(args.data):               # streamed from disk; labels stay integers (sparse)
        train = ShardedDataset(args.data, scale=1 / 255, dtype="float32")
        if packed(args.test_data):
            return (train, None), (ShardedDataset(args.test_data, scale=1 / 255, dtype="float32"), None)
        _, (xt, yt) = mnist.load_data()
        return (train, None), ((xt / 255.0).astype(np.float32).reshape((-1,) + train.shapes[0]), yt)
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        n = args.train_samples or 2048
        x = rng.random((n + 512, 32, 32, 3), dtype=np.float32)
        y = to_categorical(rng.integers(0, 10, n + 512), 10)
        return (x[:n], y[:n]), (x[n:], y[n:])
    (x, y), (xt, yt) = mnist.load_data(args.data)
    if args.train_samples:
        x, y = x[:args.train_samples], y[:args.train_samples]
    x = (x[..., None] / 255.0).astype(np.float32)      # (n, 28, 28, 1), channels last
    xt = (xt[..., None] / 255.0).astype(np.float32)
    return (x, to_categorical(y, 10)), (xt, to_categorical(yt, 10))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="global batch size (all workers together)")
    p.add_argument("--data", default=None,
                   help="the full MNIST IDX files, or a packed directory to stream (default: bundled)")
    p.add_argument("--test-data", default=None, help="a packed test set (with --data DIR packed)")
    p.add_argument("--synthetic", action="store_true", help="random 32x32x3 data instead of MNIST")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak of the cosine-decayed Adam rate")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--compression", choices=["fp16", "bf16", "topk"], default=None,
                   help="compress gradients between workers")
    p.add_argument("--overlap", action="store_true", help="overlap gradient allreduce with backward")
    p.add_argument("--steps-per-sync", type=int, default=1, help="accumulate K micro-batches per update")
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)

    distnet.utils.set_random_seed(args.seed)
    (X_train, y_train), (X_test, y_test) = load(args)

    streamed = isinstance(X_train, ShardedDataset)
    shape = X_train.shapes[0] if streamed else X_train.shape[1:]
    model = Sequential()
    if len(shape) == 2:                  # packed MNIST images are (28, 28): add the channel axis
        model.add(Reshape(shape + (1,), input_shape=shape))
    model.add(Conv2D(32, (3, 3), activation='relu', input_shape=shape if len(shape) == 3 else None))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Conv2D(64, (3, 3), activation='relu'))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Conv2D(128, (3, 3), activation='relu'))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Flatten())
    model.add(Dense(128, activation='relu'))
    model.add(Dense(10, activation='softmax'))
    # Adam as in the snippet, with its learning rate decayed to zero over the run (cosine): on the 5k-image
    # training subset this lifts test accuracy from ~96.7% to ~97.5% at no cost.
    steps = args.epochs * -(-len(X_train) // args.batch_size) // args.steps_per_sync   # optimizer updates
    adam = distnet.optimizers.Adam(distnet.optimizers.CosineDecay(args.learning_rate, decay_steps=max(steps, 1)))
    model.compile(loss='sparse_categorical_crossentropy' if streamed else 'categorical_crossentropy',
                  optimizer=adam, metrics=['accuracy'],
                  compression=args.compression, overlap=args.overlap, steps_per_sync=args.steps_per_sync)
    model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose)

    loss, accuracy = model.evaluate(X_test, y_test, verbose=0)
    if distnet.distributed.is_main():
        print(f"test accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(X_test)} held-out images, "
              f"{distnet.distributed.size()} worker(s)")
    return accuracy


if __name__ == "__main__":
    main()
