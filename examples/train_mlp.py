"""Usage: python examples/train_mlp.py [--epochs 150] [--batch-size 10] [--data pima.csv]
       mpirun -n 4 python examples/train_mlp.py

The Keras tutorial MLP on the real Pima Indians diabetes data: trains on three quarters, reports accuracy on the
held-out quarter. Under mpirun the same script trains data-parallel; only rank 0 prints.
"""
import argparse

import distnet
from distnet.datasets import load_pima, train_test_split
from distnet.layers import Dense
from distnet.models import Sequential


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=10, help="global batch size (all workers together)")
    p.add_argument("--data", default=None, help="path to pima-indians-diabetes.data.csv (default: bundled)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)

    distnet.utils.set_random_seed(args.seed)
    x, y = load_pima(args.data)
    (X_train, y_train), (X_test, y_test) = train_test_split(x, y, test_size=0.25, seed=args.seed)
    # standardize with the training quarter's statistics: the raw columns span 0..846 (insulin) vs 0..2.4
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std

    model = Sequential()
    model.add(Dense(10, input_dim=8, activation='relu'))
    model.add(Dense(10, activation='relu'))
    model.add(Dense(1, activation='sigmoid'))
    model.compile(loss='binary_crossentropy', optimizer='adam', metrics=['accuracy'])
    model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose)

    loss, accuracy = model.evaluate(X_test, y_test, verbose=0)
    if distnet.distributed.is_main():
        print(f"held-out accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(X_test)} samples, "
              f"{distnet.distributed.size()} worker(s)")
    return accuracy


if __name__ == "__main__":
    main()
