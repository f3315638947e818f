"""A layer that is the only reader of a tensor whose producer's backward does not read it (a linear convolution,
BatchNormalization, Add) runs in place over it (Model.owned_inputs, Layer.call_in_place): the same losses,
weights, predictions and gradients as the layers writing buffers of their own."""
import numpy as np

import distnet
from distnet import layers
from distnet.models import Model, Sequential


def _resnet_like(seed=0):
    """Two residual blocks (an identity shortcut, then a projection), a Subtract and an Average of two
    tensors the model also reads elsewhere, and a softmax head."""
    distnet.utils.set_random_seed(seed)
    inputs = distnet.Input((8, 8, 3))
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inputs)))
    for filters, stride in ((8, 1), (12, 2)):
        h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        h = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9)(h))
        h = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(h))
        short = x if stride == 1 else layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=stride)(x))
        x = layers.Activation("relu")(layers.Add()([h, short]))
    d = layers.Subtract()([layers.Conv2D(12, 1)(x), x])               # x: read twice, never overwritten
    a = layers.Average()([d, layers.Activation("tanh")(d)])
    pooled = layers.GlobalAveragePooling2D()(layers.Activation("relu")(a))
    return Model(inputs, layers.Dense(4, activation="softmax")(pooled))


def _data(n=12, shape=(8, 8, 3)):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n,) + shape).astype(np.float32), np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]


def _owners(model):
    return {model.order[i].name: owned for i, owned in model.owned_inputs.items()}


def test_the_model_lets_only_sole_readers_of_reusable_outputs_overwrite_them():
    m = _resnet_like()
    by_name = _owners(m)
    kinds = {type(m.get_layer(name)).__name__ + str(owned) for name, owned in by_name.items()}
    assert kinds == {"BatchNormalization(0,)", "Activation(0,)", "Add(0,)", "Add(0, 1)", "Subtract(0,)"}
    adds = [la for la in m.order if isinstance(la, layers.Add)]
    assert by_name[adds[0].name] == (0,)            # the identity shortcut is also read by the next block
    assert by_name[adds[1].name] == (0, 1)          # the projection's BatchNormalization is read by the Add alone
    for la in m.order:
        if isinstance(la, layers.Average):          # d is read twice; tanh's output is kept for its backward
            assert la.name not in by_name
        if isinstance(la, layers.Activation) and la.activation.name == "tanh":
            assert la.name not in by_name
    relus = [la for la in m.order if isinstance(la, layers.Activation) and la.activation.name == "relu"]
    assert all(la.name in by_name for la in relus)  # after BatchNormalization, Add and Average


def test_in_place_layers_train_and_predict_exactly_as_the_plain_ones():
    x, y = _data()
    runs = []
    for in_place in (True, False):
        m = _resnet_like()
        if not in_place:
            m.owned_inputs = {}
        assert bool(m.owned_inputs) == in_place
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        hist = m.fit(x, y, batch_size=6, epochs=3, verbose=0, shuffle=False)
        runs.append((hist.history["loss"], m.get_weights(), m.predict(x, verbose=0)))
    (loss_a, w_a, p_a), (loss_b, w_b, p_b) = runs
    np.testing.assert_array_equal(loss_a, loss_b)
    for a, b in zip(w_a, w_b):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p_a, p_b)
    assert loss_b[-1] < loss_b[0]


def test_a_sequential_of_batch_normalization_and_relu_runs_in_place_with_the_same_results():
    def run(in_place):
        distnet.utils.set_random_seed(3)
        m = Sequential([layers.Input((6, 5, 2)), layers.Conv2D(4, 3), layers.BatchNormalization(),
                        layers.Activation("relu"), layers.Flatten(), layers.Dense(4, activation="softmax")])
        assert sorted(m.owned_inputs.values()) == [(0,), (0,)]     # the BatchNormalization and the ReLU
        if not in_place:
            m.owned_inputs = {}
        m.compile(loss="categorical_crossentropy", optimizer="sgd")
        hist = m.fit(*_data(10, (6, 5, 2)), batch_size=5, epochs=2, verbose=0, shuffle=False)
        return hist.history["loss"], m.get_weights()
    (loss_a, w_a), (loss_b, w_b) = run(True), run(False)
    np.testing.assert_array_equal(loss_a, loss_b)
    for a, b in zip(w_a, w_b):
        np.testing.assert_array_equal(a, b)


def test_layers_shared_by_two_models_decide_per_model():
    """A BatchNormalization output that one model rectifies in place is another model's output: that model
    must return it unrectified, and the first model its ReLU."""
    distnet.utils.set_random_seed(0)
    inputs = distnet.Input((5,))
    z = layers.BatchNormalization()(layers.Dense(6)(inputs))
    r = layers.Activation("relu")(z)
    both = Model(inputs, [z, r])
    rectified = Model(inputs, r)
    assert r.layer.name not in _owners(both) and r.layer.name in _owners(rectified)
    x = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    z_out, r_out = both.predict(x, verbose=0)
    assert (z_out < 0).any()
    np.testing.assert_array_equal(rectified.predict(x, verbose=0), np.maximum(z_out, 0))
    np.testing.assert_array_equal(r_out, np.maximum(z_out, 0))


def test_a_convolution_with_an_activation_keeps_its_output():
    """Its backward reads the output (the ReLU's mask), so a BatchNormalization after it centres a copy."""
    distnet.utils.set_random_seed(0)
    m = Sequential([layers.Input((6, 6, 2)), layers.Conv2D(3, 3, activation="relu"), layers.BatchNormalization(),
                    layers.Conv2D(3, 3), layers.BatchNormalization()])
    assert list(_owners(m).values()) == [(0,)] and m.layers[3].name in _owners(m)
