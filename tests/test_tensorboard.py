"""TensorBoard event files: the encoder/decoder round trip (CRC32C, TFRecord framing, protobuf fields), the
callback's scalars and histograms during fit, rank 0 only, and the `tensorboard` package's own reader (skipped
when it is not installed)."""
import glob
import os
import struct

import numpy as np
import pytest

from distnet import callbacks, event_file, layers, optimizers, timeline
from distnet.models import Sequential
from distnet.parallel import world


def test_crc32c_known_answer_and_framing(tmp_path):
    assert event_file.crc32c(b"123456789") == 0xE3069283          # the CRC-32C check value
    assert event_file.crc32c(b"") == 0
    record = event_file.tfrecord(b"abc")
    assert struct.unpack("<Q", record[:8])[0] == 3 and record[12:15] == b"abc" and len(record) == 19


def test_writer_and_reader_round_trip(tmp_path):
    w = event_file.EventFileWriter(str(tmp_path))
    w.add_scalars({"epoch_loss": 0.25, "epoch_accuracy": 0.875}, step=3)
    values = np.arange(100, dtype=np.float32) - 20
    w.add_histogram("dense/kernel/histogram", values, step=4, bins=10)
    w.add_scalars({"big_step": -1.5}, step=2**40)
    w.close()
    assert os.path.basename(w.path).startswith("events.out.tfevents.")
    first, scalars, histo, big = event_file.read_events(w.path)
    assert first["file_version"] == "brain.Event:2" and first["scalars"] == {}
    assert scalars["step"] == 3 and scalars["scalars"] == {"epoch_loss": 0.25, "epoch_accuracy": 0.875}
    h = histo["histograms"]["dense/kernel/histogram"]
    assert (h["min"], h["max"], h["num"], h["sum"]) == (-20, 79, 100, float(values.sum()))
    assert h["sum_squares"] == float(np.dot(values, values)) and sum(h["bucket"]) == 100
    assert len(h["bucket_limit"]) == 10 and h["bucket_limit"][-1] == 79
    assert big["step"] == 2**40 and big["scalars"] == {"big_step": -1.5}
    blob = bytearray(open(w.path, "rb").read())
    blob[-6] ^= 1
    open(w.path, "wb").write(bytes(blob))
    with pytest.raises(ValueError, match="corrupt TFRecord"):
        event_file.read_events(w.path)


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.float32)


def model(lr=0.05):
    m = Sequential([layers.Input((6,)), layers.Dense(4, activation="relu"), layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer=optimizers.SGD(lr), loss="binary_crossentropy", metrics=["accuracy"])
    return m


def events_by_tag(run_dir):
    """{tag: [(step, value)]} of every scalar, {tag: [(step, histogram)]} of every histogram, in a run dir."""
    scalars, histos = {}, {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for ev in event_file.read_events(path):
            for tag, v in ev["scalars"].items():
                scalars.setdefault(tag, []).append((ev["step"], v))
            for tag, h in ev["histograms"].items():
                histos.setdefault(tag, []).append((ev["step"], h))
    return scalars, histos


def fit_with_tensorboard(tmp_path, **kw):
    x, y = data()
    m = model()
    m.timeline = timeline.Timeline()
    lr_drop = callbacks.LearningRateScheduler(lambda epoch, lr: 0.05 if epoch == 0 else 0.01)
    tb = callbacks.TensorBoard(str(tmp_path / "logs"), **kw)
    history = m.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0, callbacks=[lr_drop, tb])
    return m, history


def test_callback_writes_keras_and_distnet_scalars(tmp_path):
    m, history = fit_with_tensorboard(tmp_path, update_freq=2, histogram_freq=1)
    train, histos = events_by_tag(tmp_path / "logs" / "train")
    val, _ = events_by_tag(tmp_path / "logs" / "validation")
    for key, tag, run in (("loss", "epoch_loss", train), ("accuracy", "epoch_accuracy", train),
                          ("val_loss", "epoch_loss", val), ("val_accuracy", "epoch_accuracy", val)):
        assert [s for s, _ in run[tag]] == [0, 1]
        np.testing.assert_allclose([v for _, v in run[tag]], history.history[key], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in train["epoch_learning_rate"]], [0.05, 0.01], rtol=1e-6)
    assert [v for _, v in train["epoch_num_workers"]] == [1, 1]
    for tag in ("epoch_step_time", "epoch_allreduce_time", "epoch_samples_per_second"):
        assert all(v > 0 for _, v in train[tag]), tag
    step_time = train["epoch_step_time"][0][1]
    assert train["epoch_allreduce_time"][0][1] < step_time          # a part of the step
    assert [s for s, _ in train["batch_loss"]] == [2, 4, 6]          # 3 steps per epoch, every 2nd step
    assert "batch_accuracy" in train and "batch_step_time" in train and "epoch_val_loss" not in train
    assert sorted(histos) == sorted(f"{w.name}/histogram" for w in m.weights)
    step, h = histos[f"{m.weights[0].name}/histogram"][-1]
    assert step == 1 and h["num"] == m.weights[0].value.size
    assert h["max"] == pytest.approx(float(m.weights[0].value.max()))


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(world, "is_main", lambda: False)
    fit_with_tensorboard(tmp_path)
    assert not os.path.exists(tmp_path / "logs")


def test_bad_arguments():
    with pytest.raises(ValueError, match="update_freq"):
        callbacks.TensorBoard("logs", update_freq=0)
    with pytest.raises(ValueError, match="histogram_freq"):
        callbacks.TensorBoard("logs", histogram_freq=-1)


def test_tensorboard_reads_the_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    assert masked_crc32c(b"distnet event") == event_file.masked_crc32c(b"distnet event")
    m, history = fit_with_tensorboard(tmp_path, histogram_freq=1)
    acc = EventAccumulator(str(tmp_path / "logs" / "train"))
    acc.Reload()
    assert "epoch_loss" in acc.Tags()["scalars"] and "epoch_allreduce_time" in acc.Tags()["scalars"]
    loss = acc.Scalars("epoch_loss")
    assert [e.step for e in loss] == [0, 1]
    np.testing.assert_allclose([e.value for e in loss], history.history["loss"], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("epoch_learning_rate")], [0.05, 0.01], rtol=1e-6)
    histo = acc.Histograms(f"{m.weights[0].name}/histogram")[-1].histogram_value
    assert histo.num == m.weights[0].value.size and sum(histo.bucket) == histo.num
    val = EventAccumulator(str(tmp_path / "logs" / "validation"))
    val.Reload()
    np.testing.assert_allclose([e.value for e in val.Scalars("epoch_loss")], history.history["val_loss"], rtol=1e-6)


MPI_JOB = """
import sys
import numpy as np
import distnet
from distnet import callbacks, layers, timeline
from distnet.models import Sequential

rng = np.random.default_rng(0)
x = rng.normal(size=(60, 6)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.float32)
model = Sequential([layers.Input((6,)), layers.Dense(4, activation="relu"), layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="sgd", loss="binary_crossentropy")
model.timeline = timeline.Timeline()
rank = distnet.distributed.rank() if distnet.distributed.size() > 1 else 0
tb = [callbacks.TensorBoard(sys.argv[1])]
# every rank passes the callback, or only rank 0 (the Horovod habit): both work, rank 0 writes
model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=tb if sys.argv[2] == "all" or rank == 0 else [])
print("DONE", flush=True)
"""


@pytest.mark.parametrize("who", ["all", "rank0"])
def test_under_mpi_rank_0_writes_for_all_workers(tmp_path, who):
    from tests.parallel.mpi_helpers import run_mpi
    logs = tmp_path / "logs"
    result = run_mpi(2, MPI_JOB, tmp_path, args=(str(logs), who))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("DONE") == 2
    files = glob.glob(str(logs / "train" / "events.out.tfevents.*"))
    assert len(files) == 1
    train, _ = events_by_tag(logs / "train")
    assert [v for _, v in train["epoch_num_workers"]] == [2, 2]
    assert all(v > 0 for _, v in train["epoch_allreduce_time"])
