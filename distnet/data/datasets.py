"""Loaders for the real data sets distnet ships (small subsets) and for the full sets in their standard formats.

Bundled (see bundled/PROVENANCE.md): MNIST's 10k test set (IDX) and a disjoint 5k training subset (CSV), the Pima
Indians diabetes CSV, and the 8x8 digits. Pass `path=` (or set DISTNET_DATA) to read the full data sets instead.
"""
import gzip
import os

import numpy as np

BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")


def _open(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"Data file not found: {path!r}")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _find(directory, names, what):
    for name in names:
        for candidate in (name, name + ".gz"):
            p = os.path.join(directory, candidate)
            if os.path.exists(p):
                return p
    raise FileNotFoundError(f"{what}: none of {names} (optionally .gz) found in {directory!r}")


def read_idx(path):
    """An IDX file (the MNIST format; gzipped or raw) as a NumPy array, e.g. images (n, 28, 28) uint8."""
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number {data[:4]!r})")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path!r}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path!r} is truncated: header says shape {shape}, file holds {body.size} values")
    return body.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read_csv(path, dtype=np.float32):
    """A numeric CSV without header (gzipped or raw) as a 2-D array."""
    with _open(path) as f:
        return np.loadtxt(f, delimiter=",", dtype=dtype, ndmin=2)


def load_mnist(path=None):
    """MNIST as Keras returns it: ((x_train, y_train), (x_test, y_test)), images (n, 28, 28) uint8, labels uint8.

    path: a directory with the standard IDX files (train-images-idx3-ubyte[.gz], ...), the full data set. Without
    it, the bundled sets: 5,000 training images (500 per class) and the full 10,000-image test set. The bundled
    training file is sorted by class; it is returned with the classes taking turns (see `interleave_classes`), so
    `validation_split=0.1` holds out 50 images of every class, not the 500 nines."""
    path = path or os.environ.get("DISTNET_DATA")
    if path:
        d = os.path.join(path, "mnist") if os.path.isdir(os.path.join(path, "mnist")) else path
        x_train = read_idx(_find(d, ["train-images-idx3-ubyte", "train-images.idx3-ubyte"], "MNIST training images"))
        y_train = read_idx(_find(d, ["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"], "MNIST training labels"))
        x_test = read_idx(_find(d, ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"], "MNIST test images"))
        y_test = read_idx(_find(d, ["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"], "MNIST test labels"))
    else:
        d = os.path.join(BUNDLED, "mnist")
        x_train, y_train = interleave_classes(*load_mnist_csv(os.path.join(d, "mnist_5k.csv.gz")))
        x_test = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"))
        y_test = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
    for name, x, y in (("training", x_train, y_train), ("test", x_test, y_test)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"MNIST {name} images ({x.shape[0]}) and labels ({y.shape[0]}) differ in number")
    return (x_train, y_train), (x_test, y_test)


def load_mnist_csv(path):
    """MNIST in CSV form (784 pixel columns then the label, no header) -> (images (n, 28, 28) uint8, labels)."""
    a = read_csv(path, dtype=np.int64)
    if a.shape[1] != 785:
        raise ValueError(f"{path!r}: expected 785 columns (784 pixels + label), found {a.shape[1]}")
    return a[:, :784].reshape(-1, 28, 28).astype(np.uint8), a[:, 784].astype(np.uint8)


def interleave_classes(x, y):
    """Rows reordered so the classes take turns: the first row of each class (in file order, classes ascending),
    then the second row of each class, and so on: labels 0, 1, ..., 9, 0, 1, ... for the bundled MNIST subset.
    Every slice of 10*k consecutive rows then holds k rows of each class (for balanced classes)."""
    turn = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        turn[rows] = np.arange(rows.size)
    order = np.lexsort((y, turn))       # by turn, then by class within a turn
    return x[order], y[order]


def load_pima(path=None):
    """The Pima Indians diabetes data: x (768, 8) float32 features, y (768,) float32 0/1 outcome."""
    path = path or os.path.join(BUNDLED, "pima", "pima-indians-diabetes.data.csv")
    a = read_csv(path)
    if a.shape[1] != 9:
        raise ValueError(f"{path!r}: expected 9 columns (8 features + outcome), found {a.shape[1]}")
    return a[:, :8], a[:, 8]


def load_digits(path=None):
    """The 8x8 handwritten digits (UCI): images (1797, 8, 8) float32 in 0..16, labels (1797,) int64."""
    path = path or os.path.join(BUNDLED, "sklearn", "digits.csv.gz")
    a = read_csv(path)
    if a.shape[1] != 65:
        raise ValueError(f"{path!r}: expected 65 columns (64 pixels + label), found {a.shape[1]}")
    return a[:, :64].reshape(-1, 8, 8), a[:, 64].astype(np.int64)


def load_npz(path, mmap=True):
    """A dict of the arrays in an .npz or .npy file; .npy files are memory-mapped (mmap=True), so a data set
    larger than memory is read one batch at a time. .npz members are loaded (zip members cannot be mapped)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Data file not found: {path!r}")
    if path.endswith(".npy"):
        return {"data": np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def train_test_split(x, y, test_size=0.25, seed=0, shuffle=True):
    """Split off the last `test_size` fraction: ((x_train, y_train), (x_test, y_test)).

    shuffle=True (default) draws the split at random with `seed`; the selected rows are copied, so a
    memory-mapped x is read into memory. shuffle=False cuts the arrays as they are and returns views (nothing
    is read or copied): use it for memory-mapped data sets (fit shuffles the training part every epoch anyway)."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), received {test_size!r}")
    if len(x) != len(y):
        raise ValueError(f"train_test_split: x has {len(x)} samples, y has {len(y)}")
    cut = len(x) - int(round(len(x) * test_size))
    if not shuffle:
        return (x[:cut], y[:cut]), (x[cut:], y[cut:])
    order = np.random.default_rng(seed).permutation(len(x))
    tr, te = order[:cut], order[cut:]
    return (x[tr], y[tr]), (x[te], y[te])
