"""Global-batch sharding: every rank derives the same epoch order and takes its own slice of each global batch.

An epoch is ceil(n / batch_size) steps on every rank. Rank r of N takes [len*r//N, len*(r+1)//N) of each global
batch, so shards differ by at most one sample and a rank may get zero samples in a short last batch; it still
takes part in the step, so no collective is ever left waiting.
"""
import numpy as np


def epoch_order(num_samples, seed, epoch, shuffle=True):
    """The sample order of one epoch: a permutation seeded by (seed, epoch), identical on every rank."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def num_steps(num_samples, batch_size):
    return -(-num_samples // batch_size)


def local_bounds(length, rank, size):
    """[lo, hi) of rank's slice of a global batch of `length` samples."""
    return length * rank // size, length * (rank + 1) // size


def local_batch(order, step, batch_size, rank, size):
    """Indices of rank's samples in global batch `step` of an epoch with sample order `order`."""
    batch = order[step * batch_size:(step + 1) * batch_size]
    lo, hi = local_bounds(len(batch), rank, size)
    return batch[lo:hi]
