"""Usage: python examples/train_resnet.py [--epochs 4] [--blocks 3] [--batch-size 64] [--data MNIST_DIR] [--synthetic]
       mpirun -n 4 python examples/train_resnet.py

A ResNet-20-style residual CNN (He et al. 2016, the CIFAR variant: a 3x3 convolution, then three stages of
--blocks residual blocks with 16, 32 and 64 filters, BatchNormalization, identity shortcuts or 1x1 projections
where the shape changes, global average pooling, softmax), written with the functional API, on real MNIST: the
bundled 5,000 training images and the full 10,000-image test set (--data DIR: the full IDX files; --synthetic:
random CIFAR-shaped 32x32x3 data, for speed runs). --blocks 3 is ResNet-20 (6n+2 layers); --blocks 1 is a quick
ResNet-8. Under mpirun or distnet-launch it trains data-parallel unchanged; only rank 0 prints.
"""
import argparse

import numpy as np

import distnet
from distnet import layers
from distnet.datasets import mnist
from distnet.utils import to_categorical


def bn():
    # momentum 0.9 (PyTorch's 0.1): with Keras's 0.99 the moving statistics that inference uses still remember
    # their initial values after the few hundred steps of a short run (measured: 21% test accuracy at 96% train)
    return layers.BatchNormalization(momentum=0.9)


def residual_block(x, filters, stride):
    """conv-BN-relu-conv-BN, plus the input (projected by a strided 1x1 convolution when the shape changes)."""
    h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    h = layers.Activation("relu")(bn()(h))
    h = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
    h = bn()(h)
    if stride != 1 or x.shape[-1] != filters:
        x = bn()(layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x))
    return layers.Activation("relu")(layers.Add()([h, x]))


def resnet(input_shape, classes, blocks):
    inputs = distnet.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(bn()(x))
    for stage, filters in enumerate((16, 32, 64)):
        for b in range(blocks):
            x = residual_block(x, filters, stride=2 if stage > 0 and b == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return distnet.Model(inputs, outputs, name=f"resnet{6 * blocks + 2}")


def load(args):
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        n = args.train_samples or 1024
        x = rng.random((n + 256, 32, 32, 3), dtype=np.float32)
        y = to_categorical(rng.integers(0, 10, n + 256), 10)
        return (x[:n], y[:n]), (x[n:], y[n:])
    (x, y), (xt, yt) = mnist.load_data(args.data)
    if args.train_samples:
        x, y = x[:args.train_samples], y[:args.train_samples]
    x = (x[..., None] / 255.0).astype(np.float32)
    xt = (xt[..., None] / 255.0).astype(np.float32)
    return (x, to_categorical(y, 10)), (xt, to_categorical(yt, 10))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--blocks", type=int, default=3, help="residual blocks per stage (3: ResNet-20)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch size (all workers together)")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="peak of the cosine-decayed Adam rate")
    p.add_argument("--data", default=None, help="directory with the full MNIST IDX files (default: bundled)")
    p.add_argument("--synthetic", action="store_true", help="random 32x32x3 data instead of MNIST")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--test-samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)

    distnet.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = load(args)
    if args.test_samples:
        xt, yt = xt[:args.test_samples], yt[:args.test_samples]
    model = resnet(x.shape[1:], 10, args.blocks)
    if args.verbose and distnet.distributed.is_main():
        print(f"{model.name}: {model.count_params():,} parameters, {len(model.layers)} layers")
    steps = args.epochs * -(-len(x) // args.batch_size)
    adam = distnet.optimizers.Adam(distnet.optimizers.CosineDecay(args.learning_rate, decay_steps=max(steps, 1)))
    model.compile(loss="categorical_crossentropy", optimizer=adam, metrics=["accuracy"])
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose)
    loss, accuracy = model.evaluate(xt, yt, batch_size=256, verbose=0)
    if distnet.distributed.is_main():
        print(f"test accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(xt)} held-out images, "
              f"{distnet.distributed.size()} worker(s)")
    return accuracy


if __name__ == "__main__":
    main()
