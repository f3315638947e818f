"""Atomic, pickle-free files of named arrays plus JSON metadata.

Format: a NumPy .npz (a zip of .npy files; read with allow_pickle=False) holding the arrays and one entry
`__meta__`: UTF-8 JSON with the caller's metadata and a SHA-256 of every array, checked on load. Files are
written to a temporary name in the same directory, fsynced, then renamed over the target, so a crash while
saving leaves the previous file intact.
"""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or model file that is missing, truncated, corrupt, or not what the caller expects."""


def _digest(a):
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.dtype.str, a.shape)).encode() + a.tobytes()).hexdigest()


def save_arrays(path, arrays, meta):
    """Write {name: array} and the JSON-serializable `meta` to `path` atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"save_arrays: array {k!r} has dtype object, which cannot be saved without pickle")
    header = {"version": FORMAT_VERSION, "meta": meta, "sha256": {k: _digest(v) for k, v in arrays.items()}}
    blob = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, __meta__=blob, **arrays), suffix=".npz")


def atomic_write(path, write, suffix=""):
    """Call write(f) on a temporary file next to `path`, fsync it and rename it over `path`: a crash while writing
    leaves the previous file intact. Returns the path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, _file_mode(path))       # mkstemp makes 0600; a saved model gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _file_mode(path):
    """The mode of the file being replaced, else 0666 less the umask (read without changing it, where Linux
    shows it; 022 assumed elsewhere)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    umask = 0o022
    try:
        with open("/proc/self/status") as f:
            umask = next((int(line.split()[1], 8) for line in f if line.startswith("Umask:")), umask)
    except OSError:
        pass
    return 0o666 & ~umask


def load_arrays(path):
    """(arrays, meta) from a file written by save_arrays; CheckpointError if it is missing or damaged."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"No such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["__meta__"]).decode())
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path!r} is not a readable distnet file (truncated or corrupt?): {e}") from e
    expected = header.get("sha256", {})
    if set(expected) != set(arrays):
        raise CheckpointError(f"{path!r} is incomplete: expected arrays {sorted(expected)}, found {sorted(arrays)}")
    for k, v in arrays.items():
        if _digest(v) != expected[k]:
            raise CheckpointError(f"{path!r} is corrupt: checksum mismatch in array {k!r}")
    return arrays, header["meta"]
