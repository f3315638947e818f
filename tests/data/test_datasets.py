import gzip

import numpy as np
import pytest

from distnet.data import sharding
from distnet.datasets import load_digits, load_mnist, load_npz, load_pima, mnist, read_idx, train_test_split


def test_bundled_mnist_matches_its_provenance():
    (x, y), (xt, yt) = mnist.load_data()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and np.bincount(y).tolist() == [500] * 10
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,) and x.max() == 255
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_pima_and_digits():
    x, y = load_pima()
    assert x.shape == (768, 8) and np.bincount(y.astype(int)).tolist() == [500, 268]
    d, labels = load_digits()
    assert d.shape == (1797, 8, 8) and d.max() == 16 and set(labels.tolist()) == set(range(10))


def _write_idx(path, arr, compress):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    data = header + arr.tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def test_full_mnist_from_a_user_directory(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs, True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:3], False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:3], True)
    (x, y), (xt, yt) = load_mnist(str(tmp_path))
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(yt, labels[:3])


def test_bad_data_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST training images: none of"):
        load_mnist(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Data file not found"):
        load_pima(str(tmp_path / "nope.csv"))
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(str(tmp_path / "bad.idx"))
    _write_idx(tmp_path / "short.idx", np.zeros((4, 2), np.uint8), False)
    data = (tmp_path / "short.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(str(tmp_path / "short.idx"))
    (tmp_path / "pima.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match="expected 9 columns"):
        load_pima(str(tmp_path / "pima.csv"))


def test_npy_is_memory_mapped(tmp_path):
    a = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.save(tmp_path / "a.npy", a)
    loaded = load_npz(str(tmp_path / "a.npy"))["data"]
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, a)
    np.savez(tmp_path / "b.npz", x=a, y=a[:, 0])
    assert set(load_npz(str(tmp_path / "b.npz"))) == {"x", "y"}


def test_train_test_split_is_seeded_and_disjoint():
    x = np.arange(100)
    (a, _), (b, _) = train_test_split(x, x, 0.25, seed=1)
    assert len(a) == 75 and len(b) == 25 and not set(a) & set(b)
    (a2, _), _ = train_test_split(x, x, 0.25, seed=1)
    np.testing.assert_array_equal(a, a2)


@pytest.mark.parametrize("n,batch,size", [(103, 10, 4), (7, 3, 3), (5, 8, 4), (64, 16, 2)])
def test_sharding_covers_each_global_batch_exactly_once(n, batch, size):
    order = sharding.epoch_order(n, seed=3, epoch=2)
    np.testing.assert_array_equal(order, sharding.epoch_order(n, seed=3, epoch=2))
    assert not np.array_equal(order, sharding.epoch_order(n, seed=3, epoch=3))
    for step in range(sharding.num_steps(n, batch)):
        parts = [sharding.local_batch(order, step, batch, r, size) for r in range(size)]
        np.testing.assert_array_equal(np.concatenate(parts), order[step * batch:(step + 1) * batch])
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_bundled_mnist_training_classes_take_turns():
    """The bundled file is sorted by class; load_data interleaves it (0..9, 0..9, ...) so that validation_split
    holds out every class (the keras-io examples rely on the mixed order of Keras's mnist.load_data)."""
    from distnet.data.datasets import BUNDLED, load_mnist_csv
    (x, y), _ = mnist.load_data()
    np.testing.assert_array_equal(y[:20], np.tile(np.arange(10), 2))
    assert np.bincount(y[-500:], minlength=10).tolist() == [50] * 10          # validation_split=0.1
    assert np.bincount(y[:1000], minlength=10).tolist() == [100] * 10
    xs, ys = load_mnist_csv(f"{BUNDLED}/mnist/mnist_5k.csv.gz")
    assert np.all(np.diff(ys.astype(int)) >= 0)                                # the file really is sorted
    for c in (0, 9):                      # the same images, in file order within each class
        np.testing.assert_array_equal(x[y == c], xs[ys == c])


def test_other_bundled_sets_hold_every_class_at_their_end():
    _, (_, yt) = mnist.load_data()
    _, py = load_pima()
    _, dy = load_digits()
    assert (np.bincount(yt[-1000:], minlength=10) > 50).all()
    assert (np.bincount(py[-77:].astype(int), minlength=2) > 20).all()
    assert (np.bincount(dy[-180:], minlength=10) > 10).all()
