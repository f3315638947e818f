"""The Keras tutorial CNN on a slice of MNIST, for the multi-node tests (one script for one process, mpirun and
Ray actors):

    python cnn_job.py OUT [--epochs 1] [--samples 256] [--backup DIR] [--slow-from STEP] [--compression bf16]

Rank 0 writes OUT/result.json (steps, gradient bytes, workers, hosts) and OUT/weights.npy (the flat parameters).
--slow-from STEP: from that step on, in the first attempt only, rank 0 writes OUT/reached and every step takes
0.2 s longer, so that a test can break a node while training is surely under way.
"""
import argparse
import json
import os
import socket
import time

import numpy as np

import distnet
from distnet import callbacks
from distnet.datasets import mnist
from distnet.layers import Conv2D, Dense, Flatten, MaxPooling2D
from distnet.models import Sequential


class SlowFrom(callbacks.Callback):
    def __init__(self, step, marker):
        super().__init__()
        self.step, self.marker, self.seen = step, marker, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.step and os.environ.get("DISTNET_RESTART_COUNT", "0") == "0":
            if distnet.distributed.rank() == 0 and not os.path.exists(self.marker):
                open(self.marker, "w").close()
            time.sleep(0.2)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--backup", default=None)
    p.add_argument("--slow-from", type=int, default=None)
    p.add_argument("--compression", default=None)
    args = p.parse_args(argv)
    distnet.utils.set_random_seed(1)
    (x, y), _ = mnist.load_data()
    x = (x[:args.samples, ..., None] / 255.0).astype(np.float32)
    y = y[:args.samples]
    model = Sequential([Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)), MaxPooling2D((2, 2)),
                        Conv2D(64, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
                        Conv2D(128, (3, 3), activation="relu"), MaxPooling2D((2, 2)),
                        Flatten(), Dense(128, activation="relu"), Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", compression=args.compression)
    cbs = [callbacks.BackupAndRestore(args.backup, save_freq=2)] if args.backup else []
    if args.slow_from:
        cbs.append(SlowFrom(args.slow_from, os.path.join(args.out, "reached")))
    model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0, callbacks=cbs)
    comm = distnet.distributed.communicator()
    hosts = comm.allgather(socket.gethostname())
    if comm.rank == 0:
        np.save(os.path.join(args.out, "weights.npy"), model.flat_state.params)
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump({"steps": int(model.optimizer.iterations), "gradient_bytes": int(model.flat_state.params.nbytes),
                       "workers": comm.size, "backend": comm.backend, "hosts": hosts}, f)


if __name__ == "__main__":
    main()
