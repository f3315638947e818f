"""The functional API: graphs with skip connections, several inputs and outputs, gradients, files, summaries."""
import json

import numpy as np
import pytest

import distnet
from distnet import layers
from distnet.models import Model, Sequential, load_model
from tests.parallel.mpi_helpers import run_mpi


def residual(seed=0):
    distnet.utils.set_random_seed(seed)
    inputs = distnet.Input((6,))
    h = layers.Dense(6, activation="tanh")(inputs)
    h = layers.Add()([h, layers.Dense(6, activation="tanh")(h)])        # h feeds two layers: a fan-out
    outputs = layers.Dense(3, activation="softmax")(layers.Concatenate()([h, inputs]))
    return Model(inputs, outputs, name="res")


def test_a_chain_written_functionally_trains_exactly_like_the_sequential():
    distnet.utils.set_random_seed(1)
    inputs = distnet.Input((5,))
    f = Model(inputs, layers.Dense(1)(layers.Dense(4, activation="relu")(inputs)))
    s = Sequential([layers.Input((5,)), layers.Dense(4, activation="relu"), layers.Dense(1)])
    s.set_weights(f.get_weights())
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    for m in (f, s):
        m.compile(loss="mse", optimizer="adam")
        m.fit(x, x.sum(axis=1), batch_size=8, epochs=2, verbose=0, shuffle=False)
    np.testing.assert_array_equal(f.flat_state.params, s.flat_state.params)
    assert isinstance(s, Model)


def test_gradients_of_a_graph_with_fan_out_match_finite_differences(float64):
    model = residual()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    x = np.random.default_rng(1).normal(size=(7, 6))
    y = np.array([0, 1, 2, 1, 0, 2, 1])
    step = model.make_step(y)
    flat = model.flat_state

    def loss():
        _, per_head = step.outputs_and_losses(x, [y], True, False)
        return per_head[0][0].sum()
    _, per_head = step.outputs_and_losses(x, [y], True, True)
    model.backward(per_head[0][1], fused=step.fused)
    analytic = flat.grads.copy()
    from tests.conftest import assert_grad_close
    assert_grad_close(analytic, flat.params, loss, rtol=1e-5, atol=1e-7, max_entries=80)


def two_in_two_out():
    distnet.utils.set_random_seed(3)
    a, b = distnet.Input((4,), name="a"), distnet.Input((3,), name="b")
    h = layers.Dense(8, activation="relu")(layers.Concatenate()([a, b]))
    cls = layers.Dense(2, activation="softmax", name="cls")(h)
    reg = layers.Dense(1, name="reg")(h)
    return Model([a, b], [cls, reg])


def data(n=48):
    r = np.random.default_rng(4)
    a, b = r.normal(size=(n, 4)).astype(np.float32), r.normal(size=(n, 3)).astype(np.float32)
    return a, b, (a[:, 0] > 0).astype(np.int64), (a.sum(axis=1) + b.sum(axis=1)).astype(np.float32)


def test_two_inputs_two_outputs_losses_weights_and_metrics_per_output():
    m = two_in_two_out()
    m.compile(loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"}, loss_weights={"cls": 1.0, "reg": 0.5},
              metrics={"cls": ["accuracy"]}, optimizer="adam")
    a, b, yc, yr = data()
    h = m.fit({"a": a, "b": b}, [yc, yr], batch_size=16, epochs=3, verbose=0)
    assert {"loss", "cls_loss", "reg_loss", "cls_accuracy"} <= set(h.history)
    logs = m.evaluate([a, b], {"cls": yc, "reg": yr}, verbose=0, return_dict=True)
    pc, pr = m.predict([a, b], verbose=0)
    # as in Keras 3: each output's own loss is logged unweighted, the total is their weighted sum
    assert np.isclose(logs["reg_loss"], np.mean((pr[:, 0] - yr) ** 2), rtol=1e-4)
    assert np.isclose(logs["loss"], logs["cls_loss"] + 0.5 * logs["reg_loss"], rtol=1e-5)
    assert pc.shape == (48, 2) and pr.shape == (48, 1)
    with pytest.raises(ValueError, match=r"x given as a dict must have exactly the keys \['a', 'b'\]"):
        m.predict({"a": a}, verbose=0)
    with pytest.raises(ValueError, match="expects input of shape \\(None, 3\\) \\(Input 'b'\\) in predict"):
        m.predict([a, a], verbose=0)


def test_graph_models_save_load_and_summarise(tmp_path):
    m = two_in_two_out()
    m.compile(loss=["sparse_categorical_crossentropy", "mse"], optimizer="adam")
    a, b, yc, yr = data()
    m.fit([a, b], [yc, yr], epochs=1, verbose=0)
    m.save(tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    for p, q in zip(m.predict([a, b], verbose=0), back.predict([a, b], verbose=0)):
        np.testing.assert_array_equal(p, q)
    back.fit([a, b], [yc, yr], epochs=1, verbose=0)          # compiled, with the optimizer state
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "concatenate" in text and "a[0][0], b[0][0]" in text


def test_graph_errors_name_the_problem():
    x = distnet.Input((3,))
    d = layers.Dense(2)
    d(x)
    with pytest.raises(ValueError, match="already called in a graph"):
        d(x)
    other = distnet.Input((3,))
    y = layers.Add()([layers.Dense(3)(x), other])
    with pytest.raises(ValueError, match="Graph disconnected"):
        Model(x, y)
    with pytest.raises(ValueError, match="takes a list of tensors"):
        layers.Add()(x)
    with pytest.raises(TypeError, match="Model inputs must be symbolic tensors"):
        Model(np.zeros(3), y)


RESIDUAL_JOB = """
import json, sys
import numpy as np
import distnet
from distnet import layers
comm = distnet.distributed.init()
distnet.utils.set_random_seed(2)
inputs = distnet.Input((6, 6, 1))
h = layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
h = layers.Activation("relu")(layers.BatchNormalization(synchronized=True)(h))
h2 = layers.BatchNormalization(synchronized=True)(layers.Conv2D(4, 3, padding="same", use_bias=False)(h))
h = layers.Activation("relu")(layers.Add()([h, h2]))
out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(h))
m = distnet.Model(inputs, out)
m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", overlap=True, bucket_bytes=64)
r = np.random.default_rng(0)
x = r.normal(size=(50, 6, 6, 1)).astype(np.float32)
m.fit(x, (x.mean(axis=(1, 2, 3)) > 0).astype(int) + (x[:, 0, 0, 0] > 1), batch_size=10, epochs=2, verbose=0)
if comm.rank == 0:
    json.dump(m.flat_state.params.tolist() + m.flat_state.state.tolist(),
              open(f"{sys.argv[1]}/res_{comm.size}.json", "w"))
"""


@pytest.mark.timeout(200)
def test_a_residual_model_trains_the_same_on_1_2_3_workers(tmp_path):
    """With synchronized BatchNormalization (global-batch statistics), and gradients overlapped with backward."""
    for n in (1, 2, 3):
        res = run_mpi(n, RESIDUAL_JOB, tmp_path, args=(str(tmp_path),), timeout=150)
        assert res.returncode == 0, res.stderr[-3000:]
    ref = np.array(json.loads((tmp_path / "res_1.json").read_text()))
    for n in (2, 3):
        np.testing.assert_allclose(np.array(json.loads((tmp_path / f"res_{n}.json").read_text())), ref,
                                   rtol=1e-5, atol=1e-5)


def test_integer_ids_reach_an_embedding_uncast():
    seen = []

    class Spy(layers.Embedding):
        def call(self, x, training=False):
            seen.append(x.dtype)
            return super().call(x, training)
    inputs = distnet.Input((3,), dtype="int64")
    out = layers.Dense(1)(layers.Flatten()(Spy(2**25 + 10, 2)(inputs)))
    m = Model(inputs, out)
    m.compile(loss="mse", optimizer="sgd")
    ids = np.array([[2**25 + 1, 3, 2**25 + 9]] * 4, dtype=np.int64)     # not representable in float32
    m.fit(ids, np.zeros(4), epochs=1, verbose=0)
    assert seen and all(d.kind == "i" for d in seen)


def test_fan_out_gradients_are_summed_in_place_only_into_writable_arrays_of_their_shape():
    from distnet.models.functional import _accumulate
    pending, first = {}, np.ones((2, 3))
    _accumulate(pending, "t", first)
    _accumulate(pending, "t", np.full((2, 3), 2.0))
    assert pending["t"] is first and np.all(first == 3)          # summed into the first, no new array
    ro = np.broadcast_to(np.ones(3), (2, 3))                      # read-only view: a new array
    pending = {"t": ro}
    _accumulate(pending, "t", np.ones((2, 3)))
    assert pending["t"] is not ro and np.all(pending["t"] == 2) and np.all(ro == 1)
    small = np.ones(3)                                            # the sum has a larger shape: a new array
    pending = {"t": small}
    _accumulate(pending, "t", np.ones((2, 3)))
    assert pending["t"].shape == (2, 3) and np.all(small == 1)


def test_a_tensor_added_to_itself_and_read_by_two_more_layers_gets_every_gradient(float64):
    distnet.utils.set_random_seed(5)
    inp = distnet.Input((5,))
    h = layers.Dense(4, activation="tanh")(inp)
    s = layers.Add()([h, h, layers.Dense(4)(h)])                  # h three times into one Add, and via a Dense
    out = layers.Dense(3, activation="softmax")(layers.Concatenate()([s, h]))
    model = Model(inp, out)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    x, y = np.random.default_rng(2).normal(size=(6, 5)), np.array([0, 1, 2, 1, 0, 2])
    step = model.make_step(y)

    def loss():
        return step.outputs_and_losses(x, [y], True, False)[1][0][0].sum()
    _, per_head = step.outputs_and_losses(x, [y], True, True)
    model.backward(per_head[0][1], fused=step.fused)
    from tests.conftest import assert_grad_close
    assert_grad_close(model.flat_state.grads.copy(), model.flat_state.params, loss, rtol=1e-5, atol=1e-7,
                      max_entries=80)


def test_relu_then_max_pooling_backward_masks_the_pooled_gradient_exactly_as_the_relu_would():
    """A chain folds a ReLU layer's derivative into the max pooling after it (mask the pooled gradient, skip
    the ReLU's pass): the gradients equal the unfolded ones bit for bit, ties and all-negative windows included."""
    def grads(fold):
        distnet.utils.set_random_seed(7)
        model = Sequential([layers.Input((9, 8, 2)), layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(),
                            layers.Reshape((-1, 4)), layers.Dense(3, activation="relu"), layers.MaxPooling1D(2),
                            layers.Flatten(), layers.Dense(2, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
        assert model.relu_pools == {1, 4}                  # the poolings, in the chain of layers
        if not fold:
            model.relu_pools = set()
        x = np.round(np.random.default_rng(3).normal(size=(5, 9, 8, 2))).astype(np.float32)   # many exact ties
        y = np.array([0, 1, 1, 0, 1])
        step = model.make_step(y)
        _, per_head = step.outputs_and_losses(x, [y], True, True)
        model.backward(per_head[0][1], fused=step.fused)
        return model.flat_state.grads.copy()
    folded, plain = grads(True), grads(False)
    assert np.any(folded != 0)
    np.testing.assert_array_equal(folded, plain)
