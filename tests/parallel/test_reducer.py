"""Communication levers: gradient accumulation, compression codecs, overlap, buckets."""
import numpy as np
import pytest

import distnet
from distnet import layers
from distnet.models import Sequential
from distnet.parallel import ring
from tests.parallel.mpi_helpers import run_mpi
from tests.parallel.test_ring import simulate


@pytest.mark.parametrize("name,rtol", [("fp16", 2e-3), ("bf16", 2e-2)])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_compressed_ring_sums_within_codec_precision_and_replicas_agree(name, rtol, n):
    rng = np.random.default_rng(n)
    arrays = [rng.normal(size=1003).astype(np.float32) for _ in range(n)]
    out = simulate(arrays, ring.CODECS[name])
    for o in out[1:]:
        np.testing.assert_array_equal(o, out[0])                 # bit-identical on every worker
    exact = np.sum(arrays, axis=0)
    assert np.max(np.abs(out[0] - exact)) <= rtol * n * np.max(np.abs(exact))


def test_bf16_codec_rounds_to_nearest():
    codec = ring.CODECS["bf16"]
    x = np.array([1.0, 1.00390625, -3.14159265, 1e-30, 65504.0], dtype=np.float32)
    wire = codec.encode(x, np.empty(x.size, np.uint16))
    back = codec.decode(wire, np.empty_like(x))
    np.testing.assert_allclose(back, x, rtol=2 ** -8)
    assert back[0] == 1.0


def _model(**compile_kw):
    distnet.utils.set_random_seed(11)
    m = Sequential([layers.Input((6,)), layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", **compile_kw)
    return m


def test_gradient_accumulation_equals_a_k_times_larger_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    big = _model()
    h_big = big.fit(x, y, batch_size=30, epochs=3, verbose=0)
    small = _model(steps_per_sync=3)
    h_small = small.fit(x, y, batch_size=10, epochs=3, verbose=0)
    assert small.optimizer.iterations == big.optimizer.iterations == 12     # ceil(100/30) = 4 updates per epoch
    for a, b in zip(big.get_weights(), small.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_small.history["loss"], h_big.history["loss"], rtol=1e-5)


def test_bad_reducer_options_fail_at_compile():
    with pytest.raises(ValueError, match="compression must be one of"):
        _model(compression="zip")
    with pytest.raises(ValueError, match="steps_per_sync must be a positive int, received 0"):
        _model(steps_per_sync=0)
    with pytest.raises(ValueError, match="overlap=True works with compression None"):
        _model(compression="topk", overlap=True)


LEVERS = """
import json, os, sys
import numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential
comm = distnet.distributed.init()
rng = np.random.default_rng(0)
x = rng.normal(size=(120, 8, 8, 1)).astype(np.float32)
y = rng.integers(0, 4, 120)
out = {}
for name, kw in [("plain", {"bucket_bytes": 2048}), ("overlap", {"bucket_bytes": 2048, "overlap": True}),
                 ("fp16", {"compression": "fp16"}), ("bf16", {"compression": "bf16"}),
                 ("topk", {"compression": "topk", "topk_ratio": 0.1}),
                 ("fp16_overlap", {"compression": "fp16", "overlap": True, "bucket_bytes": 2048}),
                 ("overlap_blocks", {"bucket_bytes": 2048, "overlap": True})]:
    # overlap_blocks: the local batch (12 or 8 samples) in blocks of 4 (the convolution's output: 1152 bytes a
    # sample), the earlier blocks' gradients added in before each bucket is sent
    os.environ["DISTNET_BLOCK_BYTES"] = str(4 * 1152 if name == "overlap_blocks" else 0)
    distnet.utils.set_random_seed(4)
    m = Sequential([layers.Input((8, 8, 1)), layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(),
                    layers.Flatten(), layers.Dense(32, activation="relu"), layers.Dense(4, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", **kw)
    h = m.fit(x, y, batch_size=24, epochs=4, verbose=0)
    assert m.step.block == (4 if name == "overlap_blocks" else 0), (name, m.step.block)
    out[name] = {"params": m.flat_state.params.tolist(), "loss": h.history["loss"],
                 "wire": m.distribute_strategy.wire_bytes}
json.dump(out, open(f"{sys.argv[1]}/levers_{comm.rank}.json", "w"))
"""


@pytest.mark.timeout(240)
@pytest.mark.parametrize("n", [2, 3])
def test_overlap_and_compression_under_mpi(tmp_path, n):
    import json
    res = run_mpi(n, LEVERS, tmp_path, args=(str(tmp_path),), timeout=200)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"levers_{r}.json").read_text()) for r in range(n)]
    for name in ranks[0]:
        for r in range(1, n):                                    # replicas identical under every lever
            assert ranks[r][name]["params"] == ranks[0][name]["params"], name
    plain, over = (np.array(ranks[0][k]["params"]) for k in ("plain", "overlap"))
    if n == 2:
        np.testing.assert_array_equal(over, plain)               # a+b == b+a: the same sums, bit for bit
    else:
        np.testing.assert_allclose(over, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ranks[0]["overlap_blocks"]["params"], plain, rtol=1e-5, atol=1e-6)
    for name in ("fp16", "bf16", "topk", "fp16_overlap"):
        loss = ranks[0][name]["loss"]
        assert loss[-1] < loss[0], (name, loss)                  # still learns
    full = ranks[0]["plain"]["wire"]
    assert ranks[0]["fp16"]["wire"] < 0.6 * full and ranks[0]["bf16"]["wire"] < 0.6 * full
    assert ranks[0]["topk"]["wire"] < full
