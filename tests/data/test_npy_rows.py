"""NpyRows: rows of .npy files and memory maps read with positioned reads, never through the map."""
import os
import pickle

import numpy as np
import pytest

from distnet.data import rowio
from distnet.data.format import DataError
from distnet.data.npy import NpyRows, header_bytes, mapped_file


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (50, 32, 32, 4), dtype=np.uint8), rng.standard_normal(50)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y.astype(">f8"))                 # big-endian on disk: decoded to native
    return tmp_path, x, y


def test_paths_round_trip_with_scale(files):
    d, x, y = files
    with NpyRows(d / "x.npy", d / "y.npy", scale=1 / 255) as rows:
        assert len(rows) == 50 and rows.shapes == ((32, 32, 4), ()) and rows.dtypes == (np.float32, np.float64)
        idx = np.array([49, 0, 7, 7, 20])
        xb, yb = rows.take(idx)
        assert np.allclose(xb, x[idx] / 255) and np.array_equal(yb, y[idx]) and yb.dtype.isnative


def test_memmap_is_read_by_file_offset_not_through_the_map(files, monkeypatch):
    d, x, _ = files
    m = np.load(d / "x.npy", mmap_mode="r")
    assert mapped_file(m) == (str(d / "x.npy"), 128) and mapped_file(np.asarray(m)[10:]) == (str(d / "x.npy"),
                                                                                             128 + 10 * 4096)
    read = []
    real = os.preadv
    monkeypatch.setattr(rowio.os, "preadv", lambda fd, bufs, off: read.append(real(fd, bufs, off)) or read[-1])
    rows = NpyRows(m[5:][::2])                          # a view: offset 5 rows in, every other row
    idx = np.array([3, 0, 11])
    (xb,) = rows.take(idx)
    assert np.array_equal(xb, x[5:][::2][idx]) and sum(read) == 3 * 4096     # 4 KiB rows, 200 KiB file


def test_in_memory_and_copy_on_write_arrays_are_gathered(files):
    d, x, y = files
    cow = np.load(d / "x.npy", mmap_mode="c")
    cow[0] = 0                                            # a private change the file does not have
    assert mapped_file(cow) is None and mapped_file(x) is None
    xb, yb = NpyRows(cow, y).take(np.array([0, 1]))
    assert not xb[0].any() and np.array_equal(xb[1], x[1]) and np.array_equal(yb, y[:2])


def test_errors(files, tmp_path):
    d, _, _ = files
    with pytest.raises(ValueError, match=r"sources differ in number of samples: \{'x': 50, 'y': 3\}"):
        NpyRows(d / "x.npy", np.zeros(3))
    (tmp_path / "t.npy").write_bytes(header_bytes((10, 4), np.float32) + bytes(16))
    with pytest.raises(DataError, match=r"'.*t.npy' is truncated: its header says shape \(10, 4\) \(288 bytes\), "
                                        "the file has 144"):
        NpyRows(tmp_path / "t.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((3, 4))))
    with pytest.raises(DataError, match="is in Fortran order"):
        NpyRows(tmp_path / "f.npy")
    (tmp_path / "n.npy").write_bytes(b"hello world")
    with pytest.raises(DataError, match=r"'.*n.npy' is not a .npy file \(it starts with b'hello worl'\)"):
        NpyRows(tmp_path / "n.npy")
    with pytest.raises(IndexError, match="sample index -1 is out of range for 50 samples"):
        NpyRows(d / "x.npy").take(np.array([-1]))


def test_pickle_reopens(files):
    d, x, _ = files
    original = NpyRows(np.load(d / "x.npy", mmap_mode="r"), io_threads=2)
    idx = np.arange(49, -1, -1)                                   # 50 rows: two pieces of 25
    assert np.array_equal(original.take(idx)[0], x[idx]) and original.io_stats.reads == 2   # on two threads
    rows = pickle.loads(pickle.dumps(original))
    assert np.array_equal(rows.take(idx)[0], x[idx])


def test_long_runs_with_gaps_are_split_at_the_iovec_limit(tmp_path):
    a = np.arange(6000, dtype=np.int64)
    np.save(tmp_path / "a.npy", a)
    view = np.load(tmp_path / "a.npy", mmap_mode="r")[::3]          # 8-byte rows, 16-byte gaps: one run
    rows = NpyRows(view)
    (got,) = rows.take(np.arange(2000)[::-1])                          # 4,000 iovecs > IOV_MAX
    assert np.array_equal(got, a[::3][::-1]) and rows.io_stats.reads == -(-3999 // (rowio.IOV_MAX - 1))
