"""Freezing and unfreezing layers after they are built, as Keras: `layer.trainable = False` (or model.trainable)
takes effect at the next compile(); a model compiled before keeps training what it was compiled with, and says
so once."""
import os
import warnings

import numpy as np
import pytest

import distnet
from distnet import layers


def _data(n=48):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10, 10, 3)).astype(np.float32)
    return x, np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]


def _model(**first):
    distnet.utils.set_random_seed(0)
    return distnet.Sequential([layers.Input((10, 10, 3)), layers.Conv2D(4, 3, activation="relu", **first),
                               layers.MaxPooling2D(), layers.BatchNormalization(), layers.Flatten(),
                               layers.Dense(8, activation="relu"), layers.Dense(3, activation="softmax")])


def _fit(model, epochs=2):
    x, y = _data()
    return model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)


def _changed(model, before):
    """Per layer: whether any of its weights moved."""
    return [any(not np.array_equal(a, b) for a, b in zip(old, la.get_weights()))
            for la, old in zip(model.layers, before)]


def _snapshot(model):
    return [la.get_weights() for la in model.layers]


def test_a_layer_frozen_after_building_trains_as_one_frozen_at_construction():
    built = _model()
    built.layers[0].trainable = False
    built.compile(loss="categorical_crossentropy", optimizer="adam")
    constructed = _model(trainable=False)
    constructed.compile(loss="categorical_crossentropy", optimizer="adam")
    before = _snapshot(built)
    _fit(built)
    _fit(constructed)
    assert _changed(built, before) == [False, False, True, False, True, True]   # BN's beta/gamma train
    for a, b in zip(built.get_weights(), constructed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(built.trainable_weights) == len(constructed.trainable_weights) == 6


def test_unfreezing_and_recompiling_trains_the_layer_again_and_keeps_its_values():
    m = _model(trainable=False)
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    _fit(m, 1)
    kernel = m.layers[0].get_weights()[0].copy()
    m.layers[0].trainable = True
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    np.testing.assert_array_equal(m.layers[0].get_weights()[0], kernel)      # rebuilt buffers keep the values
    before = _snapshot(m)
    _fit(m, 1)
    assert _changed(m, before)[0]


def test_a_change_after_compile_waits_for_the_next_compile_and_is_announced_once():
    m = _model()
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    m.layers[0].trainable = False
    before = _snapshot(m)
    with pytest.warns(UserWarning, match=r"trainable flag of \['conv2d.*'\] changed after compile\(\)"):
        _fit(m, 1)
    assert _changed(m, before)[0]                   # still trained, as compiled (Keras's behaviour)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(m, 1)                                  # said once
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        before = _snapshot(m)
        _fit(m, 1)
    assert not _changed(m, before)[0]


def test_model_trainable_freezes_every_layer_and_batch_norm_statistics_never_train():
    m = _model()
    bn = m.layers[2]
    statistics = [w for w in bn.weights if not w.declared]
    assert len(statistics) == 2 and not any(w.trainable for w in statistics)
    m.trainable = False
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    assert m.trainable_weights == [] and all(not la.trainable for la in m.layers)
    m.trainable = True
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    assert len(m.trainable_weights) == 8 and not any(w.trainable for w in statistics)
    before = _snapshot(m)
    _fit(m, 1)
    assert all(_changed(m, before)[i] for i in (0, 2, 4, 5))


def test_a_wrapper_frozen_after_building_freezes_the_layers_it_wraps():
    distnet.utils.set_random_seed(0)
    m = distnet.Sequential([layers.Input((5, 4)), layers.Bidirectional(layers.LSTM(3)),
                            layers.Dense(2, activation="softmax")])
    m.layers[0].trainable = False
    assert not m.layers[0].forward_layer.trainable and not m.layers[0].backward_layer.trainable
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    x = np.random.default_rng(1).normal(size=(12, 5, 4)).astype(np.float32)
    before = _snapshot(m)
    m.fit(x, np.eye(2, dtype=np.float32)[np.arange(12) % 2], epochs=1, verbose=0)
    assert _changed(m, before) == [False, True]


def test_a_numpy_bool_is_a_bool():
    assert distnet.Sequential(trainable=np.False_).trainable is False
    d = layers.Dense(2)
    d.trainable = np.False_
    assert d.trainable is False


@pytest.mark.parametrize("value", ["no", 0, None])
def test_trainable_takes_a_bool_only(value):
    with pytest.raises(TypeError, match="trainable must be True or False, received"):
        layers.Dense(2).trainable = value
    with pytest.raises(TypeError, match="trainable must be True or False, received"):
        _model().trainable = value


def _fine_tuning(lib, weights, freeze):
    """A small base (convolution, BatchNormalization) and a head; the base frozen after building (`freeze`),
    two SGD steps. `lib`: distnet or keras."""
    m = lib.Sequential([lib.Input((6, 6, 2)), lib.layers.Conv2D(3, 3), lib.layers.BatchNormalization(),
                        lib.layers.Flatten(), lib.layers.Dense(2)])
    m.set_weights(weights)
    if freeze:
        m.layers[0].trainable = m.layers[1].trainable = False
    m.compile(optimizer=lib.optimizers.SGD(learning_rate=0.1), loss="mse")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 6, 6, 2)).astype(np.float32), rng.normal(size=(16, 2)).astype(np.float32)
    m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return m.get_weights()


def test_a_frozen_batch_normalization_uses_and_keeps_its_moving_statistics_as_keras_does():
    rng = np.random.default_rng(2)
    start = [rng.normal(size=s).astype(np.float32) for s in [(3, 3, 2, 3), (3,), (3,), (3,), (3,), (3,), (48, 2),
                                                            (2,)]]
    start[5] = np.abs(start[5]) + 0.5                   # a moving variance
    frozen = _fine_tuning(distnet, start, freeze=True)
    for a, b in zip(frozen[:6], start[:6]):             # the base: kernel, bias, gamma, beta, moving statistics
        np.testing.assert_array_equal(a, b)
    trained = _fine_tuning(distnet, start, freeze=False)
    assert not np.array_equal(trained[4], start[4])     # unfrozen: the batch's statistics move the moving mean
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    for mine, theirs in zip(frozen, _fine_tuning(keras, start, freeze=True)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_a_model_saved_between_a_freeze_and_the_next_compile_loads_frozen_with_its_optimizer_state(tmp_path):
    """The file's config holds the new flags, so the model it rebuilds trains without the frozen layer: the
    optimizer slots saved must fit that model (they were laid out for the weights compiled), each weight's slots
    kept where it still trains."""
    m = _model()
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    _fit(m, 1)
    m.layers[4].trainable = False                # the first Dense, frozen to fine-tune later; saved before compile
    path = tmp_path / "m.npz"
    m.save(path)
    loaded = distnet.models.load_model(path)
    assert not loaded.layers[4].trainable and len(loaded.trainable_weights) == 6
    saved = {w.name: (o, w.value.size) for (o, _), w in zip(m.flat_state.segments, m.flat_state.trainable)}
    for (o, size), w in zip(loaded.flat_state.segments, loaded.flat_state.trainable):
        for k, slot in loaded.optimizer.slots.items():
            np.testing.assert_array_equal(slot[o:o + size], m.optimizer.slots[k][saved[w.name][0]:][:size])
    before = _snapshot(loaded)
    _fit(loaded, 1)
    assert not _changed(loaded, before)[4]


def test_a_layer_unfrozen_before_saving_gets_fresh_optimizer_slots_in_the_file(tmp_path):
    m = _model(trainable=False)
    m.compile(loss="categorical_crossentropy", optimizer=distnet.optimizers.Adagrad(initial_accumulator_value=0.5))
    _fit(m, 1)
    m.layers[0].trainable = True
    path = tmp_path / "m.npz"
    m.save(path)
    loaded = distnet.models.load_model(path)
    assert loaded.layers[0].trainable and len(loaded.trainable_weights) == 8
    acc = loaded.optimizer.slots["accumulator"]
    np.testing.assert_array_equal(acc[:3 * 3 * 3 * 4 + 4], 0.5)  # the conv's kernel and bias: as built fresh
    np.testing.assert_array_equal(acc[3 * 3 * 3 * 4 + 4:], m.optimizer.slots["accumulator"])


def test_trainable_weights_follow_the_flag_at_once_as_keras_reports_them():
    """Keras's guide: `layer.trainable = False` then `len(layer.trainable_weights)` is 0, and model.summary()
    counts the layer as non-trainable, before any compile (what trains changes at the next compile)."""
    layer = layers.Dense(3)
    layer.build_for((4,))
    layer.trainable = False
    assert (len(layer.weights), len(layer.trainable_weights), len(layer.non_trainable_weights)) == (2, 0, 2)
    m = _model()
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    m.layers[0].trainable = False
    assert len(m.trainable_weights) == 6 and len(m.non_trainable_weights) == 4
    text = []
    m.summary(print_fn=text.append)
    assert "Trainable params: 555 " in text[0] and "Non-trainable params: 120 " in text[0]
    before = _snapshot(m)
    with pytest.warns(UserWarning, match="changed after compile"):
        _fit(m, 1)
    assert _changed(m, before)[0]                   # what trains follows compile(), as before


def test_a_keras_file_saved_between_a_freeze_and_the_next_compile_keeps_the_optimizer_state(tmp_path):
    pytest.importorskip("h5py")
    m = _model()
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    _fit(m, 1)
    m.layers[4].trainable = False
    path = tmp_path / "m.keras"
    m.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no "skipping the optimizer state"
        loaded = distnet.models.load_model(path)
    assert not loaded.layers[4].trainable and loaded.optimizer.iterations == m.optimizer.iterations
    saved = {w.name: o for (o, _), w in zip(m.flat_state.segments, m.flat_state.trainable)}
    for (o, size), w in zip(loaded.flat_state.segments, loaded.flat_state.trainable):
        for k, slot in loaded.optimizer.slots.items():
            np.testing.assert_array_equal(slot[o:o + size], m.optimizer.slots[k][saved[w.name]:][:size])


def _autoencoder(with_encoder):
    """An autoencoder, and (with_encoder) its encoder as a second model over the same layers, made after it."""
    distnet.utils.set_random_seed(0)
    inp = distnet.Input((6,))
    h = layers.Dense(4, activation="tanh")(inp)
    ae = distnet.Model(inp, layers.Dense(6)(h))
    enc = distnet.Model(inp, h) if with_encoder else None
    ae.compile(optimizer="adam", loss="mse")
    return ae, enc


def test_an_encoder_made_beside_its_autoencoder_leaves_it_training_every_layer():
    """Building the encoder moved the shared layers' weights into its own buffers: the autoencoder's optimizer
    then updated buffers no layer read, and the encoder's kernel silently stopped training."""
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    ae, enc = _autoencoder(with_encoder=True)
    alone, _ = _autoencoder(with_encoder=False)
    encoder = enc.layers[-1]                              # the Dense both models hold
    kernel = encoder.get_weights()[0].copy()
    losses = ae.fit(x, x, epochs=3, verbose=0).history["loss"]
    assert losses == alone.fit(x, x, epochs=3, verbose=0).history["loss"]
    assert not np.array_equal(encoder.get_weights()[0], kernel)
    for a, b in zip(ae.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(a, b)
    k, b = encoder.get_weights()                          # the encoder sees the trained weights
    np.testing.assert_allclose(enc.predict(x, verbose=0), np.tanh(x @ k + b), rtol=1e-5, atol=1e-6)


def test_two_models_over_the_same_layers_each_train_what_they_were_compiled_with():
    distnet.utils.set_random_seed(0)
    inp = distnet.Input((5,))
    first, second = layers.Dense(4, activation="relu"), layers.Dense(2)
    h = first(inp)
    full, part = distnet.Model(inp, second(h)), distnet.Model(inp, h)
    part.compile(optimizer="sgd", loss="mse")             # part: `first` trains
    first.trainable = False
    full.compile(optimizer="sgd", loss="mse")             # full: `first` frozen (the Weight objects are shared)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    for model, target, trains_first in ((part, rng.normal(size=(16, 4)), True), (full, rng.normal(size=(16, 2)),
                                                                                 False), (part, None, True)):
        target = rng.normal(size=(16, 4)) if target is None else target
        before = [first.get_weights()[0].copy(), second.get_weights()[0].copy()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")               # part: `first`'s flag changed after its compile
            model.fit(x, target.astype(np.float32), epochs=1, verbose=0)
        assert (not np.array_equal(before[0], first.get_weights()[0])) == trains_first
        assert (not np.array_equal(before[1], second.get_weights()[0])) == (model is full)
