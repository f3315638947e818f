"""SimpleRNN, LSTM and GRU: gradients for every flag, Keras's weight layouts and defaults, return_state as a
multi-output layer, go_backwards, empty batches and bad arguments."""
import numpy as np
import pytest

from distnet import backend, layers
from tests.layers.gradcheck import check_empty_batch, check_gradients

rng = np.random.default_rng(7)
RNNS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
FLAGS = [{}, {"return_sequences": True}, {"go_backwards": True}, {"go_backwards": True, "return_sequences": True},
         {"return_state": True}, {"return_state": True, "return_sequences": True, "go_backwards": True}]


def flag_id(flags):
    return "+".join(flags) or "last_output"


@pytest.mark.parametrize("flags", FLAGS, ids=[flag_id(f) for f in FLAGS])
@pytest.mark.parametrize("kind", sorted(RNNS))
def test_backward_matches_finite_differences(float64, kind, flags):
    check_gradients(RNNS[kind](4, **flags), rng.normal(size=(3, 5, 2)))


@pytest.fixture
def two_threads():
    backend.set_num_threads(2)
    yield
    backend.set_num_threads(1)


@pytest.mark.parametrize("make", [lambda: layers.SimpleRNN(4, return_sequences=True),
                                  lambda: layers.LSTM(4, return_state=True, go_backwards=True),
                                  lambda: layers.GRU(4, return_sequences=True, return_state=True),
                                  lambda: layers.GRU(4, reset_after=False, activation="gelu")],
                         ids=["simple_rnn", "lstm", "gru", "gru_reset_before_gelu"])
def test_scan_split_over_two_threads_matches_finite_differences(float64, two_threads, make):
    """With 2 intra-op threads each thread runs the scan on its half of the batch."""
    check_gradients(make(), rng.normal(size=(5, 4, 3)))


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_state_outputs_without_a_gradient_count_as_zero(float64, kind):
    """In a graph only some outputs may feed the loss: backward gets None for the others."""
    layer = RNNS[kind](3, return_sequences=True, return_state=True)
    n_states = len(layer.compute_output_shape((4, 2))) - 1
    check_gradients(layer, rng.normal(size=(2, 4, 2)), drop=(1,))                 # no gradient for h
    check_gradients(layer, rng.normal(size=(2, 4, 2)), drop=(0,))                 # states only
    if n_states == 2:
        check_gradients(layer, rng.normal(size=(2, 4, 2)), drop=(0, 1))           # only LSTM's carry c


@pytest.mark.parametrize("make", [
    lambda: layers.GRU(4, reset_after=False, return_sequences=True),
    lambda: layers.GRU(3, use_bias=False, return_state=True),
    lambda: layers.LSTM(3, use_bias=False, unit_forget_bias=False),
    lambda: layers.LSTM(3, activation="gelu", recurrent_activation="tanh", return_sequences=True),
    lambda: layers.GRU(3, activation="softsign", return_sequences=True),
    lambda: layers.SimpleRNN(3, activation="relu", return_sequences=True),
    lambda: layers.SimpleRNN(3, activation="linear"),
], ids=["gru_reset_before", "gru_nobias", "lstm_nobias", "lstm_gelu", "gru_softsign", "rnn_relu", "rnn_linear"])
def test_variants_backward_matches_finite_differences(float64, make):
    check_gradients(make(), rng.normal(size=(3, 4, 3)))


@pytest.mark.parametrize("kind,gates,bias", [("simple_rnn", 1, (5,)), ("lstm", 4, (20,)), ("gru", 3, (2, 15))])
def test_keras_weight_layout_and_order(kind, gates, bias):
    layer = RNNS[kind](5)
    layer.build_for((7, 3))
    assert [w.name.split("/")[-1] for w in layer.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [w.shape for w in layer.weights] == [(3, 5 * gates), (5, 5 * gates), bias]
    u = layer.recurrent_kernel.value                                    # orthogonal (orthonormal rows) by default
    np.testing.assert_allclose(u @ u.T, np.eye(5), atol=1e-5)


@pytest.mark.parametrize("frozen", ["kernel", "bias"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_input_bias_and_kernel_gradients_also_come_one_without_the_other(kind, frozen):
    """With a bias, the input projection carries a ones column and the kernel and input-bias gradients come from
    one product; with only one of them wanted, the other path must give the same numbers."""
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    g = rng.normal(size=(3, 4)).astype(np.float32)
    full, part = RNNS[kind](4), RNNS[kind](4)
    full.build_for(x.shape[1:])
    part.build_for(x.shape[1:])
    part.set_weights(full.get_weights())
    setattr(getattr(part, frozen), "grad", None)
    for layer in (full, part):
        layer.call(x, training=True)
        layer.backward(g.copy())
    kept = "bias" if frozen == "kernel" else "kernel"
    np.testing.assert_allclose(getattr(part, kept).grad, getattr(full, kept).grad, rtol=1e-5, atol=1e-6)
    assert np.abs(getattr(full, kept).grad).max() > 0


def test_gru_without_reset_after_takes_the_general_path():
    assert layers.GRU(4).fused and not layers.GRU(4, reset_after=False).fused


def test_gru_without_reset_after_has_one_bias_row():
    layer = layers.GRU(4, reset_after=False)
    layer.build_for((3, 2))
    assert layer.bias.shape == (12,)


def test_lstm_forget_gate_bias_starts_at_one():
    layer = layers.LSTM(3)
    layer.build_for((4, 2))
    np.testing.assert_array_equal(layer.bias.value, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    plain = layers.LSTM(3, unit_forget_bias=False)
    plain.build_for((4, 2))
    assert not plain.bias.value.any()


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_output_shapes_and_return_state_lists(kind):
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    n_states = 2 if kind == "lstm" else 1
    plain = RNNS[kind](4)
    assert plain(x).shape == (2, 4) and not plain.multi_output
    seq = RNNS[kind](4, return_sequences=True, return_state=True)
    out = seq(x)
    assert seq.multi_output and seq.output_shape == [(6, 4)] + [(4,)] * n_states
    assert [o.shape for o in out] == [(2, 6, 4)] + [(2, 4)] * n_states
    np.testing.assert_array_equal(out[0][:, -1], out[1])                  # the last output is the final h


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_go_backwards_reads_the_reversed_sequence_and_keeps_that_order(kind):
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    fwd = RNNS[kind](4, return_sequences=True)
    back = RNNS[kind](4, return_sequences=True, go_backwards=True)
    fwd.build_for((5, 3))
    back.build_for((5, 3))
    back.set_weights(fwd.get_weights())
    np.testing.assert_allclose(back(x), fwd(x[:, ::-1]), rtol=1e-6)


def test_lstm_step_by_step_matches_the_equations():
    """Two LSTM steps written out with Keras's gate order [i | f | c | o]."""
    layer = layers.LSTM(3, return_state=True, return_sequences=True)
    x = rng.normal(size=(2, 2, 4)).astype(np.float32)
    seq, h, c = layer(x)
    k, u, b = layer.get_weights()
    h_t, c_t = np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(2):
        z = x[:, t] @ k + h_t @ u + b
        sig = 1 / (1 + np.exp(-z))
        i, f, g, o = sig[:, :3], sig[:, 3:6], np.tanh(z[:, 6:9]), sig[:, 9:]
        c_t = f * c_t + i * g
        h_t = o * np.tanh(c_t)
        np.testing.assert_allclose(seq[:, t], h_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, c_t, rtol=1e-5, atol=1e-6)


class GateByGateLSTM(layers.LSTM):
    fused = False                       # the general path, one activation call per gate block


class GateByGateGRU(layers.GRU):
    fused = False


def run_once(layer, x, grads):
    out = layer.call(x, training=True)
    outs = [np.array(o) for o in (out if isinstance(out, list) else [out])]
    dx = layer.backward([g.copy() for g in grads] if isinstance(out, list) else grads[0].copy())
    return outs + [np.array(dx)] + [np.array(w.grad) for w in layer.weights]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("flags", [{}, {"return_sequences": True, "return_state": True, "go_backwards": True},
                                   {"use_bias": False, "return_sequences": True}], ids=flag_id)
@pytest.mark.parametrize("kind,general", [(layers.LSTM, GateByGateLSTM), (layers.GRU, GateByGateGRU)],
                         ids=["lstm", "gru"])
def test_fused_gates_match_the_gate_by_gate_path_in_float32(kind, general, flags, threads):
    """Default activations take the fused path (sigmoid through tanh with pre-scaled kernels, the scan written
    out); it must give the general path's results to float32 rounding."""
    fused, plain = kind(6, **flags), general(6, **flags)
    assert fused.fused and not plain.fused and not kind(6, activation="relu").fused
    x = rng.normal(size=(5, 7, 3)).astype(np.float32)
    fused.build_for(x.shape[1:])
    plain.build_for(x.shape[1:])
    weights = [rng.normal(scale=0.6, size=w.shape).astype(np.float32) for w in fused.get_weights()]
    fused.set_weights(weights)
    plain.set_weights(weights)
    shapes = fused.compute_output_shape(x.shape[1:])
    shapes = shapes if isinstance(shapes, list) else [shapes]
    grads = [rng.normal(size=(5,) + tuple(s)).astype(np.float32) for s in shapes]
    backend.set_num_threads(threads)
    try:
        got, want = run_once(fused, x, grads), run_once(plain, x, grads)
    finally:
        backend.set_num_threads(1)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags", [{}, {"return_sequences": True, "return_state": True}])
@pytest.mark.parametrize("kind", sorted(RNNS))
def test_empty_batch(kind, flags):
    check_empty_batch(RNNS[kind](3, **flags), rng.normal(size=(2, 4, 3)).astype(np.float32))


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_config_round_trip(kind):
    layer = RNNS[kind](5, return_sequences=True, go_backwards=True, name=f"my_{kind}")
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_frozen_layer_computes_no_weight_gradients():
    layer = layers.LSTM(3, trainable=False)
    x = rng.normal(size=(2, 4, 2)).astype(np.float32)
    layer(x)
    dx = layer.backward(np.ones((2, 3), np.float32))
    assert dx.shape == x.shape and all(w.grad is None for w in layer.weights)


@pytest.mark.parametrize("kwargs,message", [
    ({"units": 0}, "units to be a positive int, received 0"),
    ({"units": 4, "dropout": 0.2}, "dropout=0.2"),
    ({"units": 4, "recurrent_dropout": 0.1}, "recurrent_dropout=0.1"),
    ({"units": 4, "stateful": True}, "stateful=True"),
    ({"units": 4, "activation": "nope"}, "nope"),
])
def test_bad_arguments_are_named_with_the_received_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.LSTM(**kwargs)


def test_input_of_the_wrong_rank_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"rank 3 \(batch, timesteps, features\), received shape \(None, 8\)"):
        layers.GRU(4).build_for((8,))


def test_a_model_of_new_layers_round_trips_through_save_and_load(tmp_path):
    """get_config/from_config of every new layer kind, nested wrappers included, through the model's file."""
    from distnet.models import Sequential, load_model
    model = Sequential([layers.Input((6, 3)), layers.Conv1D(4, 3, padding="causal"),
                        layers.Bidirectional(layers.LSTM(5, return_sequences=True), merge_mode="ave"),
                        layers.TimeDistributed(layers.Dense(4)), layers.LayerNormalization(),
                        layers.ZeroPadding1D(1), layers.MaxPooling1D(), layers.GRU(3, reset_after=False),
                        layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    x = rng.normal(size=(8, 6, 3)).astype(np.float32)
    model.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    model.save(tmp_path / "rnn.npz")
    again = load_model(tmp_path / "rnn.npz")
    assert [type(la).__name__ for la in again.layers] == [type(la).__name__ for la in model.layers]
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_states_and_merges_in_a_functional_model(tmp_path):
    """The multi-output protocol in a graph: an LSTM's sequence and final h feed a Concatenate, its c feeds
    nothing (backward gets None for it), an Embedding reads integer ids from a second input."""
    import distnet
    distnet.utils.set_random_seed(0)          # a learning threshold needs a fixed start, whatever ran before
    data = np.random.default_rng(0)
    x, ids = distnet.Input((6, 3)), distnet.Input((5,))
    seq, h, _ = layers.LSTM(4, return_sequences=True, return_state=True)(x)
    joined = layers.Concatenate()([layers.GlobalMaxPooling1D()(seq), h,
                                   layers.GRU(4)(layers.Embedding(10, 4)(ids))])
    y = layers.Dense(2, activation="softmax")(layers.Add()([layers.Dense(6)(joined), layers.Dense(6)(joined)]))
    model = distnet.Model([x, ids], y)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    xs, idx = data.normal(size=(40, 6, 3)).astype(np.float32), data.integers(0, 10, (40, 5))
    target = (xs[:, :, 0].sum(1) > 0).astype(int)
    losses = model.fit([xs, idx], target, epochs=30, batch_size=8, verbose=0).history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    model.save(tmp_path / "graph.npz")
    again = distnet.models.load_model(tmp_path / "graph.npz")
    np.testing.assert_array_equal(again.predict([xs, idx], verbose=0), model.predict([xs, idx], verbose=0))
