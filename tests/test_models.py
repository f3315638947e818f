"""Sequential: Keras conventions, training behaviour, saving, and clear errors on bad input."""
import io
import json
import os

import numpy as np
import pytest

import distnet
from distnet import callbacks, layers, optimizers
from distnet.models import Sequential, load_model

rng = np.random.default_rng(0)


def mlp(**compile_kw):
    model = Sequential()
    model.add(layers.Dense(10, input_dim=8, activation="relu"))
    model.add(layers.Dense(10, activation="relu"))
    model.add(layers.Dense(1, activation="sigmoid"))
    model.compile(**{"loss": "binary_crossentropy", "optimizer": "adam", "metrics": ["accuracy"], **compile_kw})
    return model


def blobs(n=200, d=8, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    return x, y


def small_cnn():
    return Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(),
                       layers.Flatten(), layers.Dense(3, activation="softmax")])


def test_weight_shapes_and_order_follow_keras():
    model = small_cnn()
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(3, 3, 1, 4), (4,), (36, 3), (3,)]
    assert [la.name for la in model.layers][:2] == [model.layers[0].name, model.layers[1].name]
    assert model.count_params() == 36 + 4 + 108 + 3
    assert model.output_shape == (None, 3)


def test_weights_are_views_of_one_flat_buffer():
    model = mlp()
    buf = model.flat_state.params
    for w in model.trainable_weights:
        assert np.shares_memory(w.value, buf)
    assert buf.size == model.count_params() and buf.dtype == np.float32


def test_history_has_keras_metric_names():
    x, y = blobs()
    h = mlp().fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(h.history["loss"]) == 2 and h.epoch == [0, 1]


def test_training_reduces_loss_and_learns():
    distnet.utils.set_random_seed(1)
    x, y = blobs(400)
    model = mlp()
    h = model.fit(x, y, epochs=30, batch_size=20, verbose=0)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    loss, acc = model.evaluate(x, y, verbose=0)
    assert acc > 0.95


def test_evaluate_matches_manual_computation():
    x, y = blobs(50)
    model = mlp()
    loss, acc = model.evaluate(x, y, batch_size=7, verbose=0)
    p = model.predict(x, verbose=0)[:, 0].astype(np.float64)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    manual = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    assert np.isclose(loss, manual, rtol=1e-4)
    assert np.isclose(acc, np.mean((p > 0.5) == y))
    assert isinstance(model.evaluate(x, y, verbose=0, return_dict=True), dict)


def test_global_batch_semantics_one_step_equals_full_batch_gradient_descent():
    x, y = blobs(40)
    model = mlp(optimizer=optimizers.SGD(0.1))
    w0 = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=40, shuffle=False, verbose=0)
    twin = mlp(optimizer=optimizers.SGD(0.1))
    twin.set_weights(w0)
    twin.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_seeded_runs_repeat_exactly():
    x, y = blobs()
    results = []
    for _ in range(2):
        distnet.utils.set_random_seed(3)
        model = mlp()
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_sample_and_class_weights():
    x, y = blobs(64)
    distnet.utils.set_random_seed(0)
    m1 = mlp()
    w0 = m1.get_weights()
    m1.fit(x, y, epochs=1, batch_size=64, verbose=0, sample_weight=np.where(y == 1, 2.0, 1.0))
    m2 = mlp()
    m2.set_weights(w0)
    m2.fit(x, y, epochs=1, batch_size=64, verbose=0, class_weight={0: 1.0, 1: 2.0})
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match=r"class_weight has no weight for class\(es\) \[1\]"):
        m2.fit(x, y, epochs=1, verbose=0, class_weight={0: 1.0})


def test_regularizer_penalty_shows_in_loss():
    model = Sequential([layers.Dense(3, input_dim=4, kernel_regularizer=distnet.regularizers.L2(0.5))])
    model.compile(loss="mse", optimizer="sgd")
    x, y = np.zeros((5, 4), np.float32), np.zeros((5, 3), np.float32)
    expected = 0.5 * float(np.sum(model.layers[0].kernel.value ** 2))
    assert np.isclose(model.evaluate(x, y, verbose=0), expected, rtol=1e-5)


def test_batchnorm_and_dropout_models_train():
    model = Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3, padding="same"), layers.BatchNormalization(),
                        layers.Activation("relu"), layers.AveragePooling2D(), layers.Dropout(0.2),
                        layers.GlobalAveragePooling2D(), layers.Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="rmsprop", metrics=["accuracy"])
    x = rng.normal(size=(30, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    h = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
    assert not np.allclose(model.layers[1].moving_mean.value, 0)
    assert len(model.non_trainable_weights) == 2


def test_save_and_load_model_round_trip(tmp_path):
    x, y = blobs()
    model = mlp()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "m.distnet"
    model.save(path)
    again = load_model(path)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert again.optimizer.iterations == model.optimizer.iterations
    np.testing.assert_array_equal(again.optimizer.slots["m"], model.optimizer.slots["m"])
    # both continue identically: the optimizer state came along
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    again.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with np.load(path, allow_pickle=False) as z:       # pickle-free: loads with pickling disabled
        assert json.loads(bytes(z["__meta__"]).decode())["meta"]["format"] == "distnet.model"


def test_corrupt_or_foreign_files_are_rejected(tmp_path):
    model = mlp()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(distnet.checkpoint.CheckpointError):
        model.load_weights(tmp_path / "bad.npz")
    other = small_cnn()
    with pytest.raises(distnet.checkpoint.CheckpointError, match="different architecture"):
        other.load_weights(path)


def test_summary_lists_layers_and_params():
    out = io.StringIO()
    mlp().summary(print_fn=lambda s: out.write(s))
    text = out.getvalue()
    assert "dense" in text and "(None, 10)" in text and "Total params: 211" in text


def test_callbacks_early_stopping_restores_best_weights():
    x, y = blobs(100)
    model = mlp(optimizer=optimizers.SGD(0.0))      # lr 0: val_loss never improves after epoch 0
    es = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(x, y, epochs=20, batch_size=10, validation_split=0.2, callbacks=[es], verbose=0)
    assert len(h.history["loss"]) == 3 and es.stopped_epoch == 2


def test_reduce_lr_on_plateau_and_scheduler():
    x, y = blobs(60)
    model = mlp(optimizer=optimizers.SGD(0.0))
    rl = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.0)
    model.optimizer.learning_rate = 0.0
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    h = model.fit(x, y, epochs=3, batch_size=20, callbacks=[sched], verbose=0)
    assert np.allclose(h.history["learning_rate"], [0.1, 0.05, 0.1 / 3])
    model2 = mlp(optimizer=optimizers.SGD(1e-9))
    h = model2.fit(x, y, epochs=4, batch_size=20, callbacks=[rl], verbose=0)
    assert h.history["learning_rate"][0] == pytest.approx(1e-9)
    assert h.history["learning_rate"][-1] < 1e-9


def test_csv_logger_model_checkpoint_and_terminate_on_nan(tmp_path):
    x, y = blobs(60)
    model = mlp()
    csv_path, ckpt = tmp_path / "log.csv", tmp_path / "ep{epoch:02d}.distnet"
    model.fit(x, y, epochs=2, batch_size=20, verbose=0,
              callbacks=[callbacks.CSVLogger(csv_path), callbacks.ModelCheckpoint(str(ckpt), monitor="loss")])
    rows = csv_path.read_text().strip().splitlines()
    assert rows[0] == "epoch,accuracy,loss" and len(rows) == 3
    assert os.path.exists(tmp_path / "ep01.distnet") and os.path.exists(tmp_path / "ep02.distnet")
    blowup = mlp(optimizer=optimizers.SGD(1e30))
    h = blowup.fit(x * 1e20, y, epochs=5, batch_size=20, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert len(h.history["loss"]) == 1


def test_user_callback_gets_keras_hooks_and_logs():
    seen = []

    class Spy(callbacks.Callback):
        def on_train_begin(self, logs=None): seen.append("train_begin")
        def on_epoch_begin(self, epoch, logs=None): seen.append(f"epoch_begin{epoch}")
        def on_train_batch_end(self, batch, logs=None): seen.append(("batch", batch, sorted(logs)))
        def on_epoch_end(self, epoch, logs=None): seen.append(("epoch_end", epoch, sorted(logs)))
        def on_train_end(self, logs=None): seen.append("train_end")

    x, y = blobs(20)
    mlp().fit(x, y, epochs=1, batch_size=10, verbose=0, callbacks=[Spy()])
    assert seen == ["train_begin", "epoch_begin0", ("batch", 0, ["accuracy", "loss"]),
                    ("batch", 1, ["accuracy", "loss"]), ("epoch_end", 0, ["accuracy", "loss"]), "train_end"]


def test_progress_bar_output(capsys):
    x, y = blobs(20)
    mlp().fit(x, y, epochs=2, batch_size=10, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "2/2" in out and "loss:" in out and "accuracy:" in out
    mlp().fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


# -- bad input -------------------------------------------------------------------------------------------
def test_wrong_input_shape_names_layer_and_shape():
    model = mlp()
    with pytest.raises(ValueError, match=r"Dense layer 'dense\w*' expects input with last dimension 8, "
                                         r"received shape \(32, 9\)"):
        model.fit(np.zeros((32, 9)), np.zeros(32), verbose=0)
    with pytest.raises(ValueError, match=r"expects input of shape \(None, 8, 8, 1\).*received shape \(4, 8, 8\)"):
        small_cnn().predict(np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="Conv2D layer .* expects input of rank 4"):
        Sequential([layers.Conv2D(2, 3, input_shape=(8, 8))])


def test_fit_before_compile_and_unknown_names():
    model = Sequential([layers.Dense(1, input_dim=2)])
    with pytest.raises(RuntimeError, match="must call compile"):
        model.fit(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="Unknown loss 'binary_cross'; valid names"):
        model.compile(loss="binary_cross")
    with pytest.raises(ValueError, match="Unknown optimizer"):
        model.compile(loss="mse", optimizer="adamax2")
    with pytest.raises(ValueError, match="Unknown metric 'acuracy'; valid names:.*accuracy"):
        model.compile(loss="mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match="Unknown initializer"):
        layers.Dense(3, kernel_initializer="glorot")


def test_bad_data_errors():
    model = mlp()
    with pytest.raises(ValueError, match="empty input data"):
        model.fit(np.zeros((0, 8)), np.zeros(0))
    with pytest.raises(ValueError, match="different numbers of samples: x has 10, y has 9"):
        model.fit(np.zeros((10, 8)), np.zeros(9))
    x = np.zeros((10, 8), np.float32)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf values \(sample 3\)"):
        model.fit(x, np.zeros(10), verbose=0, shuffle=False)
    with pytest.raises(ValueError, match=r"y contains NaN or inf values \(first at sample 4\)"):
        model.fit(np.zeros((10, 8)), np.where(np.arange(10) == 4, np.nan, 0.0), verbose=0)
    with pytest.raises(ValueError, match="labels in \\[0, 1\\]"):
        model.fit(np.zeros((10, 8)), np.full(10, 3.0), verbose=0)
    with pytest.raises(ValueError, match="batch_size to be a positive int, received 0"):
        model.fit(np.zeros((10, 8)), np.zeros(10), batch_size=0)
    with pytest.raises(TypeError, match="numeric x"):
        model.fit(np.array([["a"] * 8] * 2), np.zeros(2))
    with pytest.raises(ValueError, match="rank >= 2"):
        model.predict(np.zeros(8))


def test_float32_throughout():
    x, y = blobs(20)
    model = mlp()
    model.fit(x.astype(np.float64), y.astype(np.float64), epochs=1, batch_size=10, verbose=0)
    regression = Sequential([layers.Dense(2, input_dim=8)])
    regression.compile(loss="mse", optimizer="adam")
    regression.fit(x.astype(np.float64), np.zeros((20, 2)), epochs=1, verbose=0)   # float64 labels
    assert regression.flat_state.buffer.dtype == np.float32 and regression.layers[0].kernel.grad.dtype == np.float32
    assert model.predict(x, verbose=0).dtype == np.float32
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert all(s.dtype == np.float32 for s in model.optimizer.slots.values())
    cnn = small_cnn()
    cnn.compile(loss="categorical_crossentropy", optimizer="adam")
    out = cnn(np.zeros((2, 8, 8, 1), np.float32), training=True)
    assert out.dtype == np.float32
    activated = [la for la in cnn.layers if isinstance(la, layers.base.ActivatedLayer)]
    assert len(activated) == 2
    assert all(la.call(np.zeros((2,) + la.input_shape, np.float32)).dtype == np.float32 for la in activated)
