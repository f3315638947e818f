"""The sharded format: writer -> reader round trips, reading only the rows asked for, sharded = in-memory."""
import json
import os
import pickle
import threading
import time

import numpy as np
import pytest

from distnet.data import rowio, sharding
from distnet.data.format import INDEX
from distnet.data.reader import ShardedDataset
from distnet.data.writer import ShardWriter, write_arrays


def _arrays(n=103, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8), rng.integers(0, 10, n),
            rng.standard_normal((n, 4)).astype(np.float32))


@pytest.fixture
def packed(tmp_path):
    x, y, f = _arrays()
    write_arrays(tmp_path / "ds", x, y, samples_per_shard=25, feat=f)     # shards of 25, 25, 25, 25, 3
    return tmp_path / "ds", x, y, f


def test_round_trip_several_shards_uneven_last(packed):
    path, x, y, f = packed
    index = json.loads((path / INDEX).read_text())
    assert [s["count"] for s in index["shards"]] == [25, 25, 25, 25, 3] and index["count"] == 103
    assert index["fields"][0] == {"name": "x", "shape": [6, 5, 3], "dtype": "|u1", "row_stride": 90}
    assert np.load(path / "x-00004.npy").shape == (3, 6, 5, 3)          # the short shard is a valid .npy
    data = ShardedDataset(path, fields=("x", "y", "feat"))
    assert len(data) == 103 and data.num_shards == 5
    assert data.shapes == ((6, 5, 3), (), (4,)) and data.dtypes == (np.uint8, y.dtype, np.float32)
    idx = np.random.default_rng(1).permutation(103)
    xb, yb, fb = data.take(idx)
    assert xb.dtype == np.uint8 and np.array_equal(xb, x[idx]) and np.array_equal(yb, y[idx])
    assert np.array_equal(fb, f[idx])


def test_take_any_order_repeats_and_empty(packed):
    path, x, y, _ = packed
    data = ShardedDataset(path)
    idx = np.array([102, 0, 55, 55, 3, 102, 26])
    xb, yb = data.take(idx)
    assert np.array_equal(xb, x[idx]) and np.array_equal(yb, y[idx])
    xe, ye = data.take(np.array([], dtype=np.int64))
    assert xe.shape == (0, 6, 5, 3) and ye.shape == (0,)


def test_scale_and_dtype_decode_x_only(packed):
    path, x, y, _ = packed
    data = ShardedDataset(path, scale=1 / 255)
    assert data.dtypes == (np.float32, y.dtype)
    xb, yb = data.take(np.arange(10, 40))
    assert xb.dtype == np.float32 and np.allclose(xb, x[10:40] / 255, atol=1e-7) and np.array_equal(yb, y[10:40])
    xd, yd = ShardedDataset(path, dtype={"x": "float64", "y": "int32"}).take(np.arange(5))
    assert xd.dtype == np.float64 and yd.dtype == np.int32 and np.array_equal(xd, x[:5])
    with pytest.raises(ValueError, match="scale=0.5 needs a float dtype, received dtype=int16"):
        ShardedDataset(path, scale=0.5, dtype="int16")


def test_field_subset_and_unknown_field(packed):
    path, x, _, f = packed
    fb, xb = ShardedDataset(path, fields=("feat", "x")).take(np.array([7, 99]))
    assert np.array_equal(fb, f[[7, 99]]) and np.array_equal(xb, x[[7, 99]])
    with pytest.raises(ValueError, match=r"has fields \['x', 'y', 'feat'\]; received fields=\('x', 'z'\)"):
        ShardedDataset(path, fields=("x", "z"))


@pytest.mark.parametrize("size", [1, 2, 3])
def test_sharded_batches_equal_in_memory_batches(packed, size):
    """What fit does with N workers: each rank takes its slice of every global batch of the (seed, epoch)
    permutation; from disk it must get exactly the in-memory rows."""
    path, x, y, _ = packed
    data, batch = ShardedDataset(path, scale=1 / 255), 16
    for epoch in range(2):
        order = sharding.epoch_order(len(data), seed=7, epoch=epoch)
        for step in range(sharding.num_steps(len(data), batch)):
            for rank in range(size):
                idx = sharding.local_batch(order, step, batch, rank, size)
                xb, yb = data.take(idx)
                np.testing.assert_array_equal(xb, x[idx].astype(np.float32) * np.float32(1 / 255))
                np.testing.assert_array_equal(yb, y[idx])


def test_take_reads_only_the_rows_asked_for(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 32, 32, 8), dtype=np.uint8)              # 8 KiB rows: never coalesced
    write_arrays(tmp_path / "big", x, np.arange(60), samples_per_shard=20)
    read = []
    real = os.preadv

    def counting(fd, buffers, offset):
        n = real(fd, buffers, offset)
        read.append(n)
        return n
    monkeypatch.setattr(rowio.os, "preadv", counting)
    data = ShardedDataset(tmp_path / "big", fields=("x",), verify="off")
    idx = np.array([45, 2, 30, 9, 12, 57])
    (xb,) = data.take(idx)
    assert np.array_equal(xb, x[idx])
    assert sum(read) == data.io_stats.bytes_requested == len(idx) * 8192      # the shards hold 480 KiB
    assert len(read) == data.io_stats.reads == len(idx)


def test_adjacent_rows_are_one_read_and_a_rank_reads_its_share(packed):
    path, *_ = packed
    data = ShardedDataset(path, fields=("x",), verify="off")
    data.take(np.arange(30, 40))                    # 10 adjacent rows of one shard
    assert data.io_stats.reads == 1 and data.io_stats.bytes_requested == 10 * 90
    data.io_stats.reset()
    order = sharding.epoch_order(len(data), seed=0, epoch=0)
    taken = sum(len(data.take(sharding.local_batch(order, s, 8, 1, 3))[0]) for s in range(13))
    assert taken == 38 and data.io_stats.bytes_requested <= taken * 90 + data.io_stats.reads * rowio.PAGE


def test_page_aligned_rows_read_one_page_each(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 30)
    index = write_arrays(tmp_path / "a", x, y, samples_per_shard=16, row_align=4096)
    assert [f["row_stride"] for f in index["fields"]] == [4096, 8]           # labels stay unpadded
    stored = np.load(tmp_path / "a" / "x-00001.npy")
    assert stored.dtype.itemsize == 4096 and np.array_equal(stored["x"], x[16:])   # still a valid .npy
    assert os.path.getsize(tmp_path / "a" / "x-00000.npy") == 4096 * 17                # header: one page
    data = ShardedDataset(tmp_path / "a", fields=("x", "y"), verify="lazy")
    idx = np.array([29, 3, 17, 8, 0])
    xb, yb = data.take(idx)
    assert np.array_equal(xb, x[idx]) and np.array_equal(yb, y[idx])
    data = ShardedDataset(tmp_path / "a", fields=("x",), verify="off")
    data.take(idx)
    assert data.io_stats.bytes_requested == 5 * 3072            # the padding is never read


def test_writer_streams_batches_that_straddle_shards(tmp_path):
    x, y, _ = _arrays(50)
    with ShardWriter(tmp_path / "w", samples_per_shard=8) as w:
        for a, b in [(0, 3), (3, 20), (20, 21), (21, 50)]:
            w.write(x=x[a:b], y=y[a:b])
    assert [s["count"] for s in w.index["shards"]] == [8] * 6 + [2]
    xb, yb = ShardedDataset(tmp_path / "w").take(np.arange(50))
    assert np.array_equal(xb, x) and np.array_equal(yb, y)


def test_writer_rejects_mismatched_batches_and_existing_data(tmp_path):
    x, y, _ = _arrays(10)
    w = ShardWriter(tmp_path / "w", samples_per_shard=4)
    w.write(x=x[:5], y=y[:5])
    with pytest.raises(ValueError, match=r"this batch has fields x: \(6, 5, 3\) float32, y: \(\) int64, earlier "
                                         r"batches had x: \(6, 5, 3\) uint8"):
        w.write(x=x[5:].astype(np.float32), y=y[5:])
    with pytest.raises(ValueError, match=r"fields differ in number of samples: \{'x': 5, 'y': 4\}"):
        w.write(x=x[5:], y=y[6:])
    w.close()
    with pytest.raises(FileExistsError, match="already holds a data set"):
        ShardWriter(tmp_path / "w")
    write_arrays(tmp_path / "w", x[:3], y[:3], overwrite=True)
    assert sorted(os.listdir(tmp_path / "w")) == ["crc-00000.npy", INDEX, "x-00000.npy", "y-00000.npy"]
    with pytest.raises(ValueError, match="closed before any batch"):
        ShardWriter(tmp_path / "empty").close()
    with pytest.raises(ValueError, match="field names must be identifiers other than 'crc'"):
        ShardWriter(tmp_path / "bad").write(crc=x)


def test_a_failed_write_leaves_no_files(tmp_path):
    x, y, _ = _arrays(30)
    with pytest.raises(RuntimeError, match="source failed"), ShardWriter(tmp_path / "f", samples_per_shard=8) as w:
        w.write(x=x[:20], y=y[:20])                  # two shards finished, one open
        raise RuntimeError("source failed")
    assert os.listdir(tmp_path / "f") == []


def test_io_threads_read_the_same_rows_and_bytes(packed):
    path, x, y, _ = packed
    idx = np.random.default_rng(2).permutation(103)[:90]
    serial, threaded = ShardedDataset(path), ShardedDataset(path, io_threads=4)
    for a, b, want in zip(serial.take(idx), threaded.take(idx), (x[idx], y[idx])):
        assert np.array_equal(a, want) and np.array_equal(b, want)
    assert threaded.io_stats.bytes_requested == serial.io_stats.bytes_requested
    assert any(t.name.startswith("distnet-io") for t in threading.enumerate())
    threaded.close()
    assert _threads_gone("distnet-io")
    with pytest.raises(ValueError, match="expects io_threads to be a positive int, received 0"):
        ShardedDataset(path, io_threads=0)


def _threads_gone(prefix, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(t.name.startswith(prefix) for t in threading.enumerate()):
            return True
        time.sleep(0.01)
    return False


def test_pickled_dataset_reopens(packed):
    path, x, _, _ = packed
    data = pickle.loads(pickle.dumps(ShardedDataset(path, scale=1 / 255, fields=("x",))))
    assert np.allclose(data.take(np.array([4, 80]))[0], x[[4, 80]] / 255)


def test_open_file_limit_recycles_descriptors(packed):
    path, x, y, _ = packed
    data = ShardedDataset(path, max_open_files=2)
    for s in range(5):
        xb, _ = data.take(np.array([s * 25]))
        assert np.array_equal(xb, x[[s * 25]])
    assert data.open_files <= 2
    data.close()
    assert np.array_equal(data.take(np.array([1]))[1], y[[1]])      # reopens after close


def test_default_open_file_limit_keeps_every_shard_of_a_large_set_open(tmp_path, monkeypatch):
    from distnet.data import reader
    import resource
    x, y, _ = _arrays(n=300)
    write_arrays(tmp_path / "many", x, y, samples_per_shard=1)           # 300 shards: 600 x and y files
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 1400:
        pytest.skip(f"the soft limit on open files ({soft}) is too low for this check")
    data = ShardedDataset(tmp_path / "many")
    xb, yb = data.take(np.arange(300)[::-1])                # a batch drawing from every shard
    assert np.array_equal(xb, x[::-1]) and np.array_equal(yb, y[::-1])
    assert data.open_files == 600                           # all kept: the next batch reopens nothing
    data.close()
    for limit, expected in ((1024, 512), (100, 256), (20000, 4096)):
        monkeypatch.setattr(resource, "getrlimit", lambda _, v=limit: (v, v))
        assert reader.default_max_open_files() == expected


def test_small_fields_are_read_as_one_column_per_shard_and_kept(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (60, 32, 32, 8), dtype=np.uint8), rng.integers(0, 10, 60)   # 8 KiB rows, labels
    write_arrays(tmp_path / "d", x, y, samples_per_shard=20)
    calls = []
    real = os.preadv

    def counting(fd, buffers, offset):
        calls.append(sum(len(b) for b in buffers))
        return real(fd, buffers, offset)
    monkeypatch.setattr(rowio.os, "preadv", counting)
    data = ShardedDataset(tmp_path / "d")
    idx = np.array([45, 2, 30, 9, 12, 57])               # shards 0, 1, 2
    xb, yb = data.take(idx)
    assert np.array_equal(xb, x[idx]) and np.array_equal(yb, y[idx])
    assert sorted(calls) == [20 * 8] * 3 + [8192] * 6     # a label column per shard, an image per sample
    calls.clear()
    xb, yb = data.take(idx[::-1])
    assert np.array_equal(yb, y[idx[::-1]]) and calls == [8192] * 6       # the labels are not read again


def test_read_scattered_joins_nearby_rows_of_one_file_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(bytes(range(100)) * 100)
    b.write_bytes(bytes(range(100, 200)) * 100)
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        dest = np.zeros((4, 10), np.uint8)
        stats = rowio.IOStats()
        rowio.read_scattered(np.array([fa, fa, fb, fb]), {fa: str(a), fb: str(b)}, np.array([0, 20, 30, 9000]), 10,
                             rowio.byte_view(dest), np.array([3, 0, 1, 2]), stats)
    finally:
        os.close(fa)
        os.close(fb)
    assert dest[3].tolist() == list(range(10)) and dest[0].tolist() == list(range(20, 30))
    assert dest[1].tolist() == list(range(130, 140)) and dest[2].tolist() == list(range(100, 110))
    assert stats.reads == 3 and stats.bytes_requested == 30 + 10 + 10     # a's two rows and their gap: one call
