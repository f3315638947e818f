"""distnet-data: pack from arrays, MNIST IDX and CSV; info; verify (which finds a flipped byte)."""
import gzip
import io
import json
import os

import numpy as np
import pytest

from distnet.data.__main__ import main
from distnet.data.datasets import BUNDLED, load_mnist_csv, read_idx
from distnet.data.pack import Progress
from distnet.data.reader import ShardedDataset

MNIST = os.path.join(BUNDLED, "mnist")


def test_pack_from_arrays_then_info_and_verify(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 256, (300, 8, 8), dtype=np.uint8)
    y = np.arange(300) % 7
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "packed"
    assert main(["pack", "--from-arrays", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(out),
                 "--samples-per-shard", "128"]) == 0
    captured = capsys.readouterr()
    assert "wrote 300 samples in 3 shard(s)" in captured.out and "300/300 samples (100%)" in captured.err
    xb, yb = ShardedDataset(out).take(np.arange(300))
    assert np.array_equal(xb, x) and np.array_equal(yb, y)
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "samples: 300 in 3 shard(s) of up to 128" in text and "field x: shape (8, 8), dtype |u1" in text
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 300
    assert main(["verify", str(out)]) == 0
    assert "all 9 file(s) match" in capsys.readouterr().out


def test_verify_finds_a_flipped_byte(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((50, 10), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(50, np.int8))
    main(["pack", "--from-arrays", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(tmp_path / "p"),
          "--samples-per-shard", "20"])
    data = bytearray((tmp_path / "p" / "x-00001.npy").read_bytes())
    data[-1] ^= 0x80
    (tmp_path / "p" / "x-00001.npy").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "p")]) == 1
    captured = capsys.readouterr()
    assert "1 of 9 file(s) failed verification" in captured.out
    assert "x-00001.npy' is corrupt: CRC-32" in captured.err and "x-00000.npy" not in captured.err


def test_pack_from_mnist_idx(tmp_path, capsys):
    out = tmp_path / "mnist"
    images, labels = os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"), os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz")
    assert main(["pack", "--from-mnist", images, labels, str(out), "--samples-per-shard", "4096",
                 "--row-align", "512"]) == 0
    data = ShardedDataset(out, scale=1 / 255)
    assert len(data) == 10000 and data.shapes == ((28, 28), ()) and data.num_shards == 3
    idx = np.array([9999, 0, 4096, 123])
    xb, yb = data.take(idx)
    assert np.allclose(xb, read_idx(images)[idx] / 255) and np.array_equal(yb, read_idx(labels)[idx])
    assert json.loads((out / "index.json").read_text())["fields"][0]["dtype"] == "|u1"
    assert main(["info", str(out)]) == 0           # 784-byte rows padded to 1024 for --row-align 512
    assert "field x: shape (28, 28), dtype |u1 (rows padded to 1024 bytes)" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0


def test_pack_from_csv(tmp_path, capsys):
    # the first 300 lines of the bundled MNIST CSV: 784 pixels then the label
    with gzip.open(os.path.join(MNIST, "mnist_5k.csv.gz"), "rt") as f:
        lines = f.readlines()[:300]
    (tmp_path / "m.csv").write_text("pixels...,label\n" + "".join(lines))
    x, y = load_mnist_csv(os.path.join(MNIST, "mnist_5k.csv.gz"))
    assert main(["pack", "--from-csv", str(tmp_path / "m.csv"), "--label-column", "-1", "--shape", "28,28",
                 "--dtype", "uint8", "--skip-rows", "1", str(tmp_path / "c"), "--samples-per-shard", "128"]) == 0
    xb, yb = ShardedDataset(tmp_path / "c").take(np.arange(300))
    assert xb.dtype == np.uint8 and np.array_equal(xb, x[:300]) and np.array_equal(yb, y[:300])


def test_pack_errors_say_what_to_fix(tmp_path, capsys):
    (tmp_path / "r.csv").write_text("1,2,0.5\n3,4,1.5\n")
    assert main(["pack", "--from-csv", str(tmp_path / "r.csv"), str(tmp_path / "o")]) == 2
    assert "--from-csv needs --label-column K" in capsys.readouterr().err
    assert main(["pack", "--from-csv", str(tmp_path / "r.csv"), "--label-column", "2", str(tmp_path / "o")]) == 2
    assert "lines 1-2: label 0.5 does not fit int64; choose another dtype" in capsys.readouterr().err
    assert main(["pack", "--from-csv", str(tmp_path / "r.csv"), "--label-column", "2", "--label-dtype", "float32",
                 str(tmp_path / "o"), "--overwrite"]) == 0
    assert main(["pack", "--from-csv", str(tmp_path / "r.csv"), "--label-column", "2", str(tmp_path / "o")]) == 2
    assert "already holds a data set (index.json)" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "data set directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pack", "--from-arrays", "a.npy", "b.npy", str(tmp_path / "o"), "--samples-per-shard", "0"])


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        p = Progress(1000, stream=stream)
        for done in range(0, 1001, 50):
            p.last = 0                        # let every update draw
            p.update(done, done * 10)
        p.finish()
    assert "\r[##############################] 1,000/1,000 samples (100%)" in tty.getvalue()
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and len(lines) == 10 and lines[-1].startswith("1,000/1,000 samples (100%)")
