"""distnet-bench data: the packed set is reused when complete, repacked when not; --train runs every source under
distnet-launch (tiny sizes) and reports reads, RssAnon and step times per rank."""
import json
import os

import numpy as np
import pytest

from distnet.bench import data, data_train
from distnet.bench.__main__ import main
from tests.parallel.mpi_helpers import require_mpi


def test_a_complete_pack_is_reused_and_a_damaged_one_repacked(tmp_path):
    d = str(tmp_path / "set")
    n = data.ensure_data(d, 1, progress=lambda m: None)
    assert n == 1_000_000 // 3072
    x = os.path.join(d, "x.npy")
    stamp = os.stat(x).st_mtime_ns
    assert data.ensure_data(d, 1, progress=lambda m: None) == n and os.stat(x).st_mtime_ns == stamp
    with open(os.path.join(d, "shards-page", sorted(f for f in os.listdir(os.path.join(d, "shards-page"))
                                                      if f.startswith("x-"))[0]), "r+b") as f:
        f.truncate(100)
    said = []
    assert data.ensure_data(d, 1, progress=said.append) == n
    assert any("repacking" in m for m in said)
    assert data.packed_problem(d, n, (None, "page")) is None


def test_resident_pages_count_what_was_read(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(64 * 4096))
    data.evict([str(path)])
    cold = data_train.resident_bytes(str(path))
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    os.pread(fd, 100, 10 * 4096)
    os.pread(fd, 100, 30 * 4096 + 50)
    os.close(fd)
    got = data_train.resident_bytes(str(path))
    if cold != 0:
        pytest.skip(f"eviction does not work here ({cold} bytes stayed resident)")
    assert got == 2 * 4096
    assert data_train.file_kind("/d/shards-page/crc-00001.npy") == "shards-page crc"
    assert data_train.file_kind("/d/y.npy") == "npy y"


@pytest.mark.timeout(300)
def test_bench_data_train_runs_every_source_under_the_launcher(tmp_path, capsys):
    require_mpi()
    out = tmp_path / "r.json"
    assert main(["data", "--train", "--dir", str(tmp_path / "set"), "--size-mb", "1", "-n", "2", "--batch", "32",
                 "--steps", "4", "--repeat", "1", "--ratio-repeat", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "warm shards-page / in-memory step time" in printed
    result = json.loads(out.read_text())["results"]
    records = result["records"]
    runs = {(r["source"], r["cache"]) for r in records}
    assert runs == {("shards-none", "cold"), ("shards-page", "cold"), ("npy", "cold"), ("memory", "memory"),
                    ("shards-page", "warm")}
    assert len(records) == 2 * len(runs) and {r["rank"] for r in records} == {0, 1}
    for r in records:
        assert r["steps"] == 4 and r["samples"] == 4 * 16
        assert r["share_MB"] == pytest.approx(64 * (3072 + 8) / 1e6)
        assert 0 < r["rss_anon_peak_MB"] < 600 and r["step_ms"] > 0 and np.isfinite(r["loss"])
        assert r["read_MB"] is None or r["read_MB"] >= 0
        assert set(r["phase_ms"]) >= {"forward", "backward"}
        if r["cache"] == "cold" and r["resident_MB"] is not None:       # the images it read are in the cache
            assert r["resident_MB"].get(f"{r['source']} x", 0) > 0
    summary = result["summary"]
    assert summary["warm_vs_memory_step_ratio"]["n"] == 1
    assert {(row["source"], row["cache"]) for row in summary["rows"]} == runs
    assert summary["disk"]["random_4k_reads_per_s"]["median"] > 0
