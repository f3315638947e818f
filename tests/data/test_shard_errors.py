"""Bad input to the sharded reader: each a DataError (a ValueError) naming the file, expected and found."""
import json
import os

import numpy as np
import pytest

from distnet.data.format import INDEX, DataError, file_crc32
from distnet.data.prefetch import Prefetcher
from distnet.data.reader import ShardedDataset
from distnet.data.writer import write_arrays


@pytest.fixture
def ds(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8), rng.integers(0, 10, 40)
    write_arrays(tmp_path / "ds", x, y, samples_per_shard=10)
    return tmp_path / "ds"


def _edit_index(path, edit):
    index = json.loads((path / INDEX).read_text())
    edit(index)
    (path / INDEX).write_text(json.dumps(index))


def _flip_byte(file, position):
    data = bytearray(file.read_bytes())
    data[position] ^= 0x01
    file.write_bytes(bytes(data))


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_directory_and_index(tmp_path):
    with pytest.raises(DataError, match="data set directory not found"):
        ShardedDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"index.json' not found: .* is not a distnet sharded data set"):
        ShardedDataset(tmp_path / "empty")


def test_missing_shard_file(ds):
    os.remove(ds / "x-00002.npy")
    with pytest.raises(DataError, match=r"shard file '.*x-00002.npy' is missing"):
        ShardedDataset(ds)


def test_truncated_shard_file(ds):
    with open(ds / "y-00001.npy", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match=r"'.*y-00001.npy' is truncated: index.json says 208 bytes, found 100"):
        ShardedDataset(ds)


def test_corrupt_row_found_by_lazy_check_before_the_batch_is_returned(ds):
    _flip_byte(ds / "x-00001.npy", 128 + 3 * 48 + 5)      # header, then row 3 of shard 1 = sample 13
    data = ShardedDataset(ds)
    assert data.take(np.array([12, 14, 0]))[0].shape == (3, 4, 4, 3)      # untouched rows still read
    with pytest.raises(DataError, match=r"'.*x-00001.npy' is corrupt: sample 13 \(row 3 of shard 1\) has "
                                        r"CRC-32 [0-9a-f]{8}, crc-00001.npy says [0-9a-f]{8}"):
        data.take(np.array([2, 13]))


def test_corrupt_file_found_at_open_with_verify_open(ds):
    _flip_byte(ds / "x-00003.npy", 200)
    ShardedDataset(ds, verify="off").take(np.arange(40))      # off: sizes and headers only
    with pytest.raises(DataError, match=r"'.*x-00003.npy' is corrupt: CRC-32 [0-9a-f]{8}, index.json says"):
        ShardedDataset(ds, verify="open")


def test_corrupt_checksum_file(ds):
    _flip_byte(ds / "crc-00000.npy", 130)
    with pytest.raises(DataError, match=r"'.*crc-00000.npy' is corrupt"):
        ShardedDataset(ds).take(np.array([1]))


def test_unknown_format_version_and_name(ds):
    _edit_index(ds, lambda i: i.update(version=7))
    with pytest.raises(DataError, match="unknown format version 7; this distnet reads version 1"):
        ShardedDataset(ds)
    _edit_index(ds, lambda i: i.update(format="tfrecord"))
    with pytest.raises(DataError, match="expected format 'distnet-shards', found 'tfrecord'"):
        ShardedDataset(ds)


def test_index_counts_that_do_not_add_up(ds):
    _edit_index(ds, lambda i: i.update(count=41))
    with pytest.raises(DataError, match=r"the shard counts \[10, 10, 10, 10\] add up to 40, but the index says "
                                        "count 41"):
        ShardedDataset(ds)


def test_index_count_that_does_not_match_the_file(ds):
    def edit(index):
        index["shards"][1]["count"], index["shards"][2]["count"] = 9, 11
    _edit_index(ds, edit)
    data = ShardedDataset(ds)
    with pytest.raises(DataError, match=r"'.*x-00001.npy' holds shape \(10, 4, 4, 3\), index.json says "
                                        r"\(9, 4, 4, 3\)"):
        data.take(np.array([15]))


def test_index_size_that_does_not_match_the_file(ds):
    _edit_index(ds, lambda i: i["shards"][0]["files"]["x"].update(bytes=500))
    with pytest.raises(DataError, match=r"'.*x-00000.npy' is larger than recorded: index.json says 500 bytes, "
                                        "found 608"):
        ShardedDataset(ds)


def _replace_shard(ds, name, array):
    """Swap a shard file for another array, with the index's size and checksum updated to match it: the index
    then disagrees with the file only in what the .npy header says."""
    np.save(ds / name, array)
    field = name.split("-")[0]

    def edit(index):
        index["shards"][0]["files"][field].update(bytes=os.path.getsize(ds / name),
                                                  crc32=f"{file_crc32(ds / name):08x}")
    _edit_index(ds, edit)


def test_shard_with_another_dtype(ds):
    _replace_shard(ds, "y-00000.npy", np.arange(10, dtype=np.float64))
    with pytest.raises(DataError, match=r"'.*y-00000.npy' holds dtype float64, index.json says int64"):
        ShardedDataset(ds).take(np.array([3]))


def test_shard_with_another_shape(ds):
    _replace_shard(ds, "x-00000.npy", np.zeros((10, 4, 3, 4), np.uint8))
    with pytest.raises(DataError, match=r"'.*x-00000.npy' holds shape \(10, 4, 3, 4\), index.json says "
                                        r"\(10, 4, 4, 3\)"):
        ShardedDataset(ds).take(np.array([3]))


def test_not_a_npy_file(ds):
    size = os.path.getsize(ds / "x-00000.npy")
    (ds / "x-00000.npy").write_bytes(b"PK\x03\x04" + bytes(size - 4))
    with pytest.raises(DataError, match=r"'.*x-00000.npy' is not a .npy file"):
        ShardedDataset(ds, verify="off").take(np.array([0]))


def test_prefetched_error_arrives_at_its_batch_naming_shard_and_sample(ds):
    _flip_byte(ds / "x-00002.npy", 128 + 7 * 48)           # sample 27
    data = ShardedDataset(ds)
    batches = [np.array([0, 1]), np.array([5, 39]), np.array([27, 3]), np.array([4])]
    got = []
    with pytest.raises(DataError, match=r"prefetching step 2 failed: DataError: shard file '.*x-00002.npy' is "
                                        r"corrupt: sample 27 \(row 7 of shard 2\)") as info:
        for xb, _ in Prefetcher(lambda s: data.take(batches[s]), range(4), describe=lambda s: f"step {s}"):
            got.append(len(xb))
    assert got == [2, 2] and isinstance(info.value.__cause__, DataError)


def test_bad_arguments(ds):
    with pytest.raises(ValueError, match=r"verify to be one of \('lazy', 'open', 'off'\), received 'always'"):
        ShardedDataset(ds, verify="always")
    data = ShardedDataset(ds)
    with pytest.raises(IndexError, match="sample index 40 is out of range for 40 samples"):
        data.take(np.array([3, 40]))
    with pytest.raises(ValueError, match=r"expects a 1-D array of sample indices, received shape \(2, 2\)"):
        data.take(np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="expects integer sample indices, received dtype float64"):
        data.take(np.array([1.0]))


def test_corrupt_label_found_at_the_batch_that_needs_it(ds):
    _flip_byte(ds / "y-00001.npy", 128 + 3 * 8)            # header, then the label of sample 13
    data = ShardedDataset(ds)
    assert data.take(np.array([12, 14]))[1].shape == (2,)  # the shard's labels are read whole, checked by row
    with pytest.raises(DataError, match=r"'.*y-00001.npy' is corrupt: sample 13 \(row 3 of shard 1\) has "
                                        r"CRC-32 [0-9a-f]{8}, crc-00001.npy says [0-9a-f]{8}"):
        data.take(np.array([2, 13, 35]))
