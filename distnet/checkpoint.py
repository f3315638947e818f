"""Atomic, pickle-free files of named arrays plus JSON metadata, and the directory of backups that one job at a
time writes.

Format: a NumPy .npz (a zip of .npy files; read with allow_pickle=False) holding the arrays and one entry
`__meta__`: UTF-8 JSON with the format version, the caller's metadata and a SHA-256 of every array, checked on
load (the zip's CRC-32 covers `__meta__` itself). Files are written to a temporary name in the same directory,
fsynced, then renamed over the target, so a crash while saving leaves the previous file intact. A file is
never trusted: whatever is wrong with it (not a zip, a .npy, a damaged or "encrypted" archive, a missing
entry, a version outside the supported range, a checksum mismatch) is a CheckpointError.
"""
import fcntl
import hashlib
import json
import os
import tempfile
import time

import numpy as np

FORMAT_VERSION = 1          # what save_arrays writes
OLDEST_VERSION = 1          # the oldest format load_arrays reads
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


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
    """(arrays, meta) from a file written by save_arrays; CheckpointError if it is missing, damaged, or not one."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise CheckpointError(f"No such file: {path!r}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path!r}: {e}") from e
    if magic != _ZIP_MAGIC:
        what = "a single NumPy array (.npy)" if magic == _NPY_MAGIC[:4] else f"not a zip archive (it starts {magic!r})"
        raise CheckpointError(f"{path!r} is not a distnet file (an .npz archive of arrays): it is {what}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__meta__" not in z.files:
                raise CheckpointError(f"{path!r} is an .npz archive but not a distnet file (no __meta__ entry)")
            header = json.loads(bytes(z["__meta__"]).decode())
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except CheckpointError:
        raise
    except Exception as e:     # a damaged archive surfaces as BadZipFile, RuntimeError ("encrypted"),
        # NotImplementedError (compression method), ValueError, OSError, EOFError, UnicodeDecodeError, ...
        raise CheckpointError(f"{path!r} is not a readable distnet file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from e
    expected, meta = _check_header(header, path)
    if set(expected) != set(arrays):
        raise CheckpointError(f"{path!r} is incomplete: expected arrays {sorted(expected)}, found {sorted(arrays)}")
    for k, v in arrays.items():
        if _digest(v) != expected[k]:
            raise CheckpointError(f"{path!r} is corrupt: checksum mismatch in array {k!r}")
    return arrays, meta


def _check_header(header, path):
    """(checksums, meta) of a parsed __meta__ entry, after checking its shape and format version."""
    if not isinstance(header, dict) or not {"version", "meta", "sha256"} <= set(header):
        found = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path!r} has a malformed header: expected version, meta and sha256, found {found}")
    version = header["version"]
    if not isinstance(version, int) or not OLDEST_VERSION <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has format version {version!r}; this distnet reads versions "
                              f"{OLDEST_VERSION} to {FORMAT_VERSION} (was it written by a newer distnet?)")
    if not isinstance(header["meta"], dict) or not isinstance(header["sha256"], dict):
        raise CheckpointError(f"{path!r} has a malformed header: meta and sha256 must be JSON objects")
    return header["sha256"], header["meta"]


def remove_quietly(path):
    """Delete path; a file that is already gone (another process pruned it) is not an error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class BackupDirectory:
    """The directory where one job at a time keeps its numbered backups (backup-*.npz).

    `open()` (rank 0, when fit starts) checks that the directory can be used and takes an exclusive lock on its
    `.lock` file (flock: the kernel releases it when the process ends, however it ends), which holds the
    owner's pid, host and start time. A second job pointed at the same directory while the first runs stops
    with a CheckpointError naming the owner instead of blending the two trainings; a job restarted after a
    crash finds the lock free and resumes its own backups. Within one process the lock is taken once."""

    LOCK = ".lock"
    _held = {}            # realpath -> open lock file of this process

    def __init__(self, path):
        self.path = os.fspath(path)

    def open(self):
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise CheckpointError(f"BackupAndRestore: backup_dir {self.path!r} is a file, not a directory; "
                                  "remove it or choose another backup_dir")
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"BackupAndRestore: cannot create backup_dir {self.path!r}: {e}") from e
        key = os.path.realpath(self.path)
        if key in self._held:
            return
        while True:
            f = self._lock()
            try:                # the file we locked must still be the lock (close() unlinks it): else retry
                if os.stat(self._lock_path()).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                            "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        f.flush()
        self._held[key] = f

    def _lock_path(self):
        return os.path.join(self.path, self.LOCK)

    def _lock(self):
        try:
            f = open(self._lock_path(), "a+")
        except OSError as e:
            raise CheckpointError(f"BackupAndRestore: backup_dir {self.path!r} is not writable: {e}") from e
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise CheckpointError(f"BackupAndRestore: backup_dir {self.path!r} is in use by another job ({owner}); "
                                  "give each job its own backup_dir (or stop the other job)") from None
        return f

    def close(self, remove=False):
        """Release the lock (fit completed); with remove=True also delete the lock file (nothing left to guard)."""
        f = self._held.pop(os.path.realpath(self.path), None)
        if f is not None:
            if remove:
                remove_quietly(self._lock_path())      # while still locked: nobody can take the old file
            f.close()

    def files(self):
        """Backup paths, oldest first."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        return [os.path.join(self.path, n) for n in sorted(names) if n.startswith("backup-") and n.endswith(".npz")]

    def prune(self, keep):
        for old in self.files()[:-keep] if keep else self.files():
            remove_quietly(old)
