"""Recurrent models trained data-parallel under mpirun reach the single-process weights (N-invariance) on 1, 2
and 3 workers: an LSTM stack with Conv1D, Bidirectional GRU and LayerNormalization, and an Embedding + LSTM
model on integer ids (uneven shards: 103 samples, batch 10)."""
import numpy as np
import pytest

from tests.parallel.mpi_helpers import run_mpi

JOB = """
import sys
import numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential

distnet.utils.set_random_seed(3)
rng = np.random.default_rng(0)
n = 103
x = rng.normal(size=(n, 8, 3)).astype(np.float32)
y = rng.integers(0, 3, n)
seq = Sequential([layers.Input((8, 3)), layers.Conv1D(4, 3, padding="causal", activation="relu"),
                  layers.LSTM(6, return_sequences=True), layers.LayerNormalization(),
                  layers.Bidirectional(layers.GRU(4)), layers.Dense(3, activation="softmax")])
seq.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
seq.fit(x, y, batch_size=10, epochs=3, verbose=0)
ids = rng.integers(0, 20, (n, 6)).astype(np.float32)
emb = Sequential([layers.Input((6,)), layers.Embedding(20, 4), layers.LSTM(5), layers.Dense(1, activation="sigmoid")])
emb.compile(loss="binary_crossentropy", optimizer="adam")
emb.fit(ids, (y > 0).astype(np.float32), batch_size=10, epochs=3, verbose=0)
comm = distnet.distributed.communicator()
final = seq.get_weights() + emb.get_weights()
np.savez(f"{sys.argv[1]}/weights_{comm.size}_rank{comm.rank}.npz", **{f"w{i:03d}": w for i, w in enumerate(final)})
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnn_dp")
    for n in (1, 2, 3):
        res = run_mpi(n, JOB, out, args=(str(out),), timeout=150)
        assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.timeout(500)
@pytest.mark.parametrize("n", [2, 3])
def test_same_final_weights_as_one_worker(trained, n):
    def weights(workers, rank=0):
        with np.load(trained / f"weights_{workers}_rank{rank}.npz") as z:
            return [z[k] for k in sorted(z.files)]
    single = weights(1)
    assert len(single) == (2 + 3 + 2 + 2 * 3 + 2) + (1 + 3 + 2)         # every layer's weights came back
    for rank in range(n):
        for a, b in zip(single, weights(n, rank)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
