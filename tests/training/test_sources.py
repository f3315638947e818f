"""fit/evaluate on data that is not an in-memory array: packed shards, memory maps, PyDatasets, generators."""
import json

import numpy as np
import pytest

import distnet
from distnet import layers
from distnet.data import DataError, ShardedDataset, write_arrays
from distnet.models import Sequential
from tests.parallel.mpi_helpers import run_mpi


def images(n=90, seed=0):
    r = np.random.default_rng(seed)
    x = r.integers(0, 256, size=(n, 6, 6, 1), dtype=np.uint8)
    return x, (x.reshape(n, -1).mean(axis=1) > 127).astype(np.int64)


def cnn(augment=False):
    distnet.utils.set_random_seed(11)
    stack = [layers.Input((6, 6, 1))] + ([layers.RandomFlip("horizontal", seed=3)] if augment else []) + [
        layers.Conv2D(3, 3, activation="relu"), layers.Flatten(), layers.Dense(2, activation="softmax")]
    m = Sequential(stack)
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m


def test_training_from_shards_equals_training_from_memory(tmp_path):
    x, y = images()
    write_arrays(tmp_path / "packed", x, y, samples_per_shard=25)
    a, b = cnn(), cnn()
    ha = a.fit(x.astype(np.float32) / 255, y, batch_size=16, epochs=2, verbose=0)
    hb = b.fit(ShardedDataset(tmp_path / "packed", scale=1 / 255, dtype="float32"), batch_size=16, epochs=2,
               verbose=0, validation_data=ShardedDataset(tmp_path / "packed", scale=1 / 255, dtype="float32"))
    np.testing.assert_allclose(b.flat_state.params, a.flat_state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hb.history["loss"], ha.history["loss"], rtol=1e-5)
    assert "val_accuracy" in hb.history
    assert np.isclose(b.evaluate(ShardedDataset(tmp_path / "packed", scale=1 / 255, dtype="float32"), verbose=0)[0],
                      a.evaluate(x.astype(np.float32) / 255, y, verbose=0)[0], rtol=1e-5)


def test_a_memory_mapped_array_is_read_by_rows_and_trains_the_same(tmp_path):
    x, y = images()
    np.save(tmp_path / "x.npy", x.astype(np.float32) / 255)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    a, b = cnn(), cnn()
    a.fit(x.astype(np.float32) / 255, y, batch_size=16, epochs=1, verbose=0)
    b.fit(mapped, y, batch_size=16, epochs=1, verbose=0, validation_split=0.2)
    c = cnn()
    c.fit(x.astype(np.float32)[:72] / 255, y[:72], batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(b.flat_state.params, c.flat_state.params, rtol=1e-5, atol=1e-6)


def test_a_memory_mapped_input_is_read_ahead_on_the_prefetch_thread(tmp_path, monkeypatch):
    from distnet.data.prefetch import Prefetcher
    from distnet.training import adapter, fit_loop
    x, y = images()
    np.save(tmp_path / "x.npy", x.astype(np.float32) / 255)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert adapter.ArrayData([mapped], [y]).prefetch and not adapter.ArrayData([np.array(mapped)], [y]).prefetch
    streams = []
    original = fit_loop.batch_stream

    def spy(*args, **kwargs):
        streams.append(original(*args, **kwargs))
        return streams[-1]
    monkeypatch.setattr(fit_loop, "batch_stream", spy)
    a, b = cnn(), cnn()
    a.fit(x.astype(np.float32) / 255, y, batch_size=16, epochs=1, verbose=0)
    b.fit(mapped, y, batch_size=16, epochs=1, verbose=0)
    assert not isinstance(streams[0], Prefetcher) and isinstance(streams[1], Prefetcher)
    assert not streams[1].alive                              # closed at the end of the epoch
    np.testing.assert_allclose(b.flat_state.params, a.flat_state.params, rtol=1e-5, atol=1e-6)


class Batches:
    """A Keras PyDataset-like object: len() batches, each (x, y)."""

    def __init__(self, x, y, batch):
        self.x, self.y, self.batch, self.epochs_ended = x, y, batch, 0

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        return self.x[i * self.batch:(i + 1) * self.batch], self.y[i * self.batch:(i + 1) * self.batch]

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_pydataset_and_generator_batches_are_global_batches():
    x, y = images()
    x = x.astype(np.float32) / 255
    a, b, c = cnn(), cnn(), cnn()
    a.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    ds = Batches(x, y, 16)
    b.fit(ds, epochs=2, verbose=0)
    assert ds.epochs_ended >= 2
    np.testing.assert_allclose(b.flat_state.params, a.flat_state.params, rtol=1e-5, atol=1e-6)

    def gen():
        while True:
            for i in range(len(ds)):
                yield ds[i]
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        cnn().fit(gen(), epochs=1, verbose=0)
    c.fit(gen(), steps_per_epoch=len(ds), epochs=2, verbose=0)
    np.testing.assert_allclose(c.flat_state.params, a.flat_state.params, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="provides the targets"):
        cnn().fit(ds, y, verbose=0)


def test_a_corrupt_shard_stops_fit_at_the_batch_that_needs_it(tmp_path):
    x, y = images()
    write_arrays(tmp_path / "packed", x, y, samples_per_shard=30)
    shard = sorted((tmp_path / "packed").glob("x-*.npy"))[1]
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF
    shard.write_bytes(bytes(raw))
    m = cnn()
    before = m.get_weights()
    with pytest.raises(DataError, match=r"x-00001\.npy") as info:
        m.fit(ShardedDataset(tmp_path / "packed", scale=1 / 255, dtype="float32"), batch_size=90, epochs=1,
              verbose=0)
    assert "step 1" in str(info.value)
    assert all(np.array_equal(p, q) for p, q in zip(before, m.get_weights()))     # no partial update


SHARDED_JOB = """
import json, sys
import numpy as np
import distnet
from distnet import layers
from distnet.data import ShardedDataset
from distnet.models import Sequential
comm = distnet.distributed.init()
distnet.utils.set_random_seed(11)
m = Sequential([layers.Input((6, 6, 1)), layers.RandomFlip("horizontal", seed=3),
                layers.Conv2D(3, 3, activation="relu"), layers.Flatten(), layers.Dense(2, activation="softmax")])
m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
m.fit(ShardedDataset(sys.argv[1] + "/packed", scale=1 / 255, dtype="float32"), batch_size=16, epochs=2, verbose=0)
if comm.rank == 0:
    json.dump(m.flat_state.params.tolist(), open(f"{sys.argv[1]}/sharded_{comm.size}.json", "w"))
"""


@pytest.mark.timeout(180)
def test_sharded_training_with_augmentation_is_the_same_on_1_2_3_workers(tmp_path):
    x, y = images()
    write_arrays(tmp_path / "packed", x, y, samples_per_shard=25)
    for n in (1, 2, 3):
        res = run_mpi(n, SHARDED_JOB, tmp_path, args=(str(tmp_path),), timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
    ref = np.array(json.loads((tmp_path / "sharded_1.json").read_text()))
    for n in (2, 3):
        np.testing.assert_allclose(np.array(json.loads((tmp_path / f"sharded_{n}.json").read_text())), ref,
                                   rtol=1e-5, atol=1e-6)
    m = cnn(augment=True)          # the same in one process without MPI, from memory
    m.fit(x.astype(np.float32) / 255, y, batch_size=16, epochs=2, verbose=0)
    np.testing.assert_allclose(m.flat_state.params, ref, rtol=1e-5, atol=1e-6)
