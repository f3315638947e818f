"""Bidirectional and TimeDistributed: gradients, merge modes, weight order, configs, empty batches."""
import numpy as np
import pytest

from distnet import layers
from tests.layers.gradcheck import check_empty_batch, check_gradients

rng = np.random.default_rng(11)
MODES = ["concat", "sum", "mul", "ave", None]


@pytest.mark.parametrize("sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("mode", MODES, ids=[str(m) for m in MODES])
def test_bidirectional_backward_matches_finite_differences(float64, mode, sequences):
    layer = layers.Bidirectional(layers.LSTM(3, return_sequences=sequences), merge_mode=mode)
    check_gradients(layer, rng.normal(size=(2, 4, 2)))


@pytest.mark.parametrize("inner", [layers.GRU, layers.SimpleRNN, layers.LSTM])
def test_bidirectional_with_states_backward_matches_finite_differences(float64, inner):
    layer = layers.Bidirectional(inner(3, return_state=True, return_sequences=True))
    check_gradients(layer, rng.normal(size=(2, 4, 2)))
    check_gradients(layer, rng.normal(size=(2, 4, 2)), drop=(0,))        # only the states feed the loss


def test_bidirectional_is_forward_and_reversed_layer_merged():
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    bi = layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="concat")
    out = bi(x)
    fwd, back = layers.GRU(4, return_sequences=True), layers.GRU(4, return_sequences=True)
    fwd.build_for((5, 3))
    back.build_for((5, 3))
    w = bi.get_weights()
    fwd.set_weights(w[:3])                  # Keras's order: the forward layer's weights, then the backward's
    back.set_weights(w[3:])
    np.testing.assert_allclose(out[..., :4], fwd(x), rtol=1e-6)
    np.testing.assert_allclose(out[..., 4:], back(x[:, ::-1])[:, ::-1], rtol=1e-6)
    assert [w.name for w in bi.weights][:3] == [f"forward_{bi.forward_layer.name[8:]}/{n}"
                                                for n in ("kernel", "recurrent_kernel", "bias")]
    assert bi.backward_layer.go_backwards and not bi.forward_layer.go_backwards


def test_bidirectional_shapes_and_outputs():
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    layer = layers.Bidirectional(layers.LSTM(4, return_state=True))
    out = layer(x)
    assert layer.output_shape == [(8,), (4,), (4,), (4,), (4,)]      # merged output, forward h, c, backward h, c
    assert [o.shape for o in out] == [(2, 8)] + [(2, 4)] * 4
    separate = layers.Bidirectional(layers.SimpleRNN(2, return_sequences=True), merge_mode=None)
    assert separate.build_for((5, 3)) == [(5, 2), (5, 2)]


@pytest.mark.parametrize("mode", ["concat", None])
def test_bidirectional_empty_batch(mode):
    layer = layers.Bidirectional(layers.LSTM(3, return_sequences=True, return_state=True), merge_mode=mode)
    check_empty_batch(layer, rng.normal(size=(2, 4, 3)).astype(np.float32))


def test_bidirectional_config_round_trip_and_registry():
    layer = layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="sum", name="bi")
    config = layer.get_config()
    clone = layers.get_layer_class("Bidirectional").from_config(config)
    assert clone.get_config() == config
    assert clone.forward_layer.name == layer.forward_layer.name


def test_bidirectional_refuses_bad_arguments():
    with pytest.raises(ValueError, match="merge_mode in .*received 'max'"):
        layers.Bidirectional(layers.LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="expects a recurrent layer .*received Dense"):
        layers.Bidirectional(layers.Dense(3))
    with pytest.raises(TypeError, match="received 'lstm'"):
        layers.Bidirectional("lstm")
    with pytest.raises(ValueError, match="same return_sequences, received True and False"):
        layers.Bidirectional(layers.LSTM(3, return_sequences=True),
                             backward_layer=layers.LSTM(3, go_backwards=True))


def test_frozen_bidirectional_freezes_both_directions():
    layer = layers.Bidirectional(layers.LSTM(2), trainable=False)
    layer.build_for((3, 2))
    assert layer.weights and not layer.trainable_weights


@pytest.mark.parametrize("make,shape", [
    (lambda: layers.Dense(3, activation="tanh"), (2, 4, 5)),
    (lambda: layers.Conv2D(2, 2, padding="same"), (2, 3, 4, 4, 1)),
    (lambda: layers.LayerNormalization(), (2, 3, 4)),
], ids=["dense", "conv2d", "layernorm"])
def test_time_distributed_backward_matches_finite_differences(float64, make, shape):
    check_gradients(layers.TimeDistributed(make()), rng.normal(size=shape))


def test_time_distributed_applies_the_same_layer_to_every_step():
    x = rng.normal(size=(2, 4, 5)).astype(np.float32)
    td = layers.TimeDistributed(layers.Dense(3))
    out = td(x)
    assert td.output_shape == (4, 3) and [w.shape for w in td.weights] == [(5, 3), (3,)]
    for t in range(4):
        np.testing.assert_allclose(out[:, t], td.layer(x[:, t]), rtol=1e-6)


def test_time_distributed_empty_batch_config_and_errors():
    check_empty_batch(layers.TimeDistributed(layers.Dense(3)), rng.normal(size=(2, 4, 5)).astype(np.float32))
    layer = layers.TimeDistributed(layers.Dense(3, name="inner"), name="td")
    assert layers.TimeDistributed.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match=r"rank >= 3 .*received shape \(None, 4\)"):
        layers.TimeDistributed(layers.Dense(3)).build_for((4,))
    with pytest.raises(ValueError, match="single-input, single-output layers, received LSTM"):
        layers.TimeDistributed(layers.LSTM(3, return_state=True))
