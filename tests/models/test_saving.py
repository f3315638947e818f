"""load_model never trusts a file: every malformed one is a CheckpointError (byte-flip fuzz), the format version
is checked, and a file that is not a distnet model says what it is."""
import json
import struct

import numpy as np
import pytest

import distnet
from distnet import checkpoint, layers
from distnet.checkpoint import CheckpointError
from distnet.models import Sequential, load_model


def small_model():
    distnet.utils.set_random_seed(1)
    m = Sequential([layers.Input((3,)), layers.Dense(2, activation="relu"), layers.Dense(1)])
    m.compile(loss="mse", optimizer="adam")
    m.fit(np.ones((4, 3), np.float32), np.ones(4, np.float32), batch_size=4, epochs=1, verbose=0)
    return m


def test_byte_flips_give_a_checkpoint_error_or_the_identical_model(tmp_path):
    path = tmp_path / "m.npz"
    small_model().save(path)
    good = path.read_bytes()
    reference = load_model(path)
    rng = np.random.default_rng(19)
    positions = sorted(set(rng.choice(len(good), size=min(len(good), 1500), replace=False).tolist()))
    flipped = tmp_path / "flipped.npz"
    outcomes = {"error": 0, "identical": 0}
    for i in positions:
        data = bytearray(good)
        data[i] ^= int(rng.integers(1, 256))
        flipped.write_bytes(bytes(data))
        try:
            again = load_model(flipped)
        except CheckpointError:
            outcomes["error"] += 1
            continue
        # a flip in a field nobody reads (a timestamp, a "made by" version) may load: then nothing changed
        assert again.get_config() == reference.get_config(), f"byte {i}"
        for a, b in zip(again.get_weights() + list(again.optimizer.slots.values()),
                        reference.get_weights() + list(reference.optimizer.slots.values())):
            np.testing.assert_array_equal(a, b, err_msg=f"byte {i}")
        outcomes["identical"] += 1
    assert outcomes["error"] > len(positions) // 2, outcomes     # not vacuous: most flips are caught


def _set_in_central_directory(data, offset, value):
    """Write a 2-byte field at `offset` of every central-directory entry of a zip."""
    data = bytearray(data)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + offset:at + offset + 2] = struct.pack("<H", value)
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


@pytest.mark.parametrize("field,value,error", [(8, 0x0001, "RuntimeError"),          # the "encrypted" flag
                                               (10, 99, "NotImplementedError")])      # compression method
def test_zip_header_flags_give_a_checkpoint_error(tmp_path, field, value, error):
    path = tmp_path / "m.npz"
    small_model().save(path)
    path.write_bytes(_set_in_central_directory(path.read_bytes(), field, value))
    with pytest.raises(CheckpointError, match=f"truncated or corrupt.*{error}"):
        load_model(path)


def test_format_version_is_checked_with_the_supported_range(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)        # as a newer distnet would write
    small_model().save(path)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"format version 99; this distnet reads versions 1 to 1"):
        load_model(path)


def test_files_that_are_not_distnet_models(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3))
    with pytest.raises(CheckpointError, match=r"not a distnet file .*a single NumPy array \(\.npy\)"):
        load_model(tmp_path / "a.npy")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a zip archive"):
        load_model(tmp_path / "t.txt")
    np.savez(tmp_path / "plain.npz", a=np.arange(3))
    with pytest.raises(CheckpointError, match="no __meta__ entry"):
        load_model(tmp_path / "plain.npz")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path)                                      # a directory
    with pytest.raises(CheckpointError, match="No such file"):
        load_model(tmp_path / "missing.npz")


@pytest.mark.parametrize("edit,message", [
    (lambda meta: meta.pop("config"), "no 'config' entry"),
    (lambda meta: meta["config"].pop("layers"), "malformed model config: KeyError"),
    (lambda meta: meta.update(class_name=["Sequential"]), "which distnet cannot build"),
    (lambda meta: meta["compile"].pop("optimizer"), "malformed compile settings or optimizer state: KeyError"),
])
def test_missing_or_malformed_entries_give_a_checkpoint_error(tmp_path, edit, message):
    path = tmp_path / "m.npz"
    small_model().save(path)
    arrays, meta = checkpoint.load_arrays(path)
    edit(meta)
    checkpoint.save_arrays(path, arrays, meta)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_malformed_header_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, __meta__=np.frombuffer(json.dumps(["not", "a", "header"]).encode(), dtype=np.uint8))
    with pytest.raises(CheckpointError, match="malformed header"):
        load_model(path)
