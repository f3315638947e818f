"""Preprocessing layers: Keras semantics, and random draws that depend on (seed, epoch, global sample id) only."""
import numpy as np
import pytest

from distnet.layers import Dense, Flatten, Input, RandomFlip, RandomTranslation, Rescaling, get_layer_class
from distnet.layers.preprocessing import sample_uniforms
from distnet.models import Sequential


def _images(n=12, h=6, w=5, c=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(np.float32)


def _random_layers():
    return [RandomFlip(seed=3), RandomFlip("vertical", seed=3),
            RandomTranslation(0.3, (-0.2, 0.4), seed=5),
            RandomTranslation((0.1, 0.5), 0.25, fill_mode="constant", interpolation="nearest", fill_value=-1, seed=5),
            RandomTranslation(0.5, 0.5, fill_mode="wrap", seed=1), RandomTranslation(0.2, 0.3, fill_mode="nearest")]


@pytest.mark.parametrize("layer", _random_layers(), ids=lambda la: la.name)
def test_same_sample_ids_same_augmentation_however_the_batch_is_split(layer):
    x, ids = _images(), np.arange(100, 112)
    layer.set_batch_context(4, ids)
    whole = layer(x, training=True)
    parts = []
    for size in (1, 2, 3):                 # N workers, each with its slice of the global batch
        for r in range(size):
            lo, hi = len(ids) * r // size, len(ids) * (r + 1) // size
            layer.set_batch_context(4, ids[lo:hi])
            parts.append(layer(x[lo:hi], training=True))
        np.testing.assert_array_equal(np.concatenate(parts[-size:]), whole)
    perm = np.random.default_rng(0).permutation(12)        # the order within the batch does not matter either
    layer.set_batch_context(4, ids[perm])
    np.testing.assert_array_equal(layer(x[perm], training=True), whole[perm])
    assert not np.array_equal(whole, x)
    layer.set_batch_context(5, ids)                          # another epoch, other draws
    assert not np.array_equal(layer(x, training=True), whole)


@pytest.mark.parametrize("layer", _random_layers(), ids=lambda la: la.name)
def test_identity_at_inference(layer):
    x = _images()
    layer.set_batch_context(0, np.arange(12))
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_without_context_successive_calls_differ_and_seeds_matter():
    x = _images()
    flip = RandomFlip(seed=1)
    assert not np.array_equal(flip(x, training=True), flip(x, training=True))
    a, b = RandomTranslation(0.3, 0.3, seed=1), RandomTranslation(0.3, 0.3, seed=2)
    for la in (a, b):
        la.set_batch_context(0, np.arange(12))
    assert not np.array_equal(a(x, training=True), b(x, training=True))
    flip.set_batch_context(0, np.arange(3))
    with pytest.raises(ValueError, match="set_batch_context gave 3 sample ids, but the batch has 12 samples"):
        flip(x, training=True)


def test_flip_directions_and_its_gradient():
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3, 1)
    for mode, expected in (("horizontal", x[:, :, ::-1]), ("vertical", x[:, ::-1])):
        layer = RandomFlip(mode, seed=0)
        u = sample_uniforms(0, 0, np.arange(2), 2)
        flipped = u[:, 0 if mode == "horizontal" else 1] < 0.5
        layer.set_batch_context(0, np.arange(2))
        out = layer(x, training=True)
        np.testing.assert_array_equal(out, np.where(flipped[:, None, None, None], expected, x))
        np.testing.assert_array_equal(layer.backward(out.copy()), x)      # the flip is its own inverse


def test_translation_by_whole_pixels_matches_roll():
    x = _images(n=3, h=4, w=5, c=1)
    layer = RandomTranslation((0.5, 0.5), (-0.4, -0.4), fill_mode="wrap", interpolation="nearest", seed=0)
    np.testing.assert_allclose(layer(x, training=True), np.roll(x, (2, -2), axis=(1, 2)))
    const = RandomTranslation((0.25, 0.25), (0.0, 0.0), fill_mode="constant", fill_value=7.0, seed=0)
    out = const(x, training=True)                            # down by one row, bilinear with no fraction
    np.testing.assert_allclose(out[:, 1:], x[:, :-1])
    np.testing.assert_allclose(out[:, 0], 7.0)
    reflect = RandomTranslation((0.0, 0.0), (0.4, 0.4), seed=0)       # right by two: d c b a | a b c d
    np.testing.assert_allclose(reflect(x, training=True)[:, :, :2], x[:, :, 1::-1])
    half = RandomTranslation((0.0, 0.0), (0.1, 0.1), fill_mode="nearest", seed=0)   # half a pixel right
    np.testing.assert_allclose(half(x, training=True)[:, :, 1:], (x[:, :, 1:] + x[:, :, :-1]) / 2, rtol=1e-6)


def test_rescaling_forward_backward_and_config():
    layer = Rescaling(1 / 127.5, offset=-1.0)
    x = np.array([0, 127.5, 255], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(layer(x).ravel(), [-1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(Rescaling(1 / 255)(np.full((2, 2), 255, np.uint8)), 1.0, atol=1e-6)
    np.testing.assert_allclose(layer.backward(np.ones((1, 3, 1, 1), np.float32)), 1 / 127.5)
    per_channel = Rescaling([1.0, 2.0])
    np.testing.assert_allclose(per_channel(np.ones((1, 2, 2), np.float32))[0, 0], [1.0, 2.0])
    config = layer.get_config()
    assert config["scale"] == 1 / 127.5 and config["offset"] == -1.0
    clone = get_layer_class("Rescaling").from_config(config)
    np.testing.assert_allclose(clone(x), layer(x))


def test_configs_round_trip():
    for layer in [RandomFlip("vertical", seed=4), RandomTranslation((-0.1, 0.2), 0.3, "constant", "nearest", 9, 2.0)]:
        config = layer.get_config()
        clone = type(layer).from_config({**config, "name": config["name"] + "_clone"})
        x, ids = _images(), np.arange(12)
        layer.set_batch_context(1, ids)
        clone.set_batch_context(1, ids)
        np.testing.assert_array_equal(layer(x, training=True), clone(x, training=True))


def test_keras_like_argument_errors():
    with pytest.raises(ValueError, match=r"RandomFlip layer 'f' expects mode to be one of \('horizontal', "
                                         r"'vertical', 'horizontal_and_vertical'\), received 'diagonal'"):
        RandomFlip("diagonal", name="f")
    with pytest.raises(ValueError, match=r"expects height_factor with values in \[-1, 1\], received 1.5"):
        RandomTranslation(1.5, 0.1)
    with pytest.raises(ValueError, match=r"expects width_factor with lower <= upper, received \(0.3, -0.3\)"):
        RandomTranslation(0.1, (0.3, -0.3))
    with pytest.raises(ValueError, match=r"expects height_factor to be a float or a \(lower, upper\) pair, "
                                         "received 'big'"):
        RandomTranslation("big", 0.1)
    with pytest.raises(ValueError, match=r"expects fill_mode to be one of \('reflect', 'wrap', 'nearest', "
                                         r"'constant'\), received 'mirror'"):
        RandomTranslation(0.1, 0.1, fill_mode="mirror")
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, height, width, channels\), received "
                                         r"shape \(None, 5, 3\)"):
        RandomFlip()(np.zeros((2, 5, 3)), training=True)
    with pytest.raises(ValueError, match="expects seed to be an int or None, received 0.5"):
        RandomFlip(seed=0.5)
    with pytest.raises(ValueError, match="expects scale to be a number or an array of numbers, received 'x'"):
        Rescaling("x")
    with pytest.raises(ValueError, match="has no input gradient: put it first in the model"):
        RandomTranslation(0.1, 0.1).backward(np.zeros((1, 2, 2, 1)))


def test_sample_uniforms_are_uniform_and_pure():
    u = sample_uniforms(7, 3, np.arange(20000), 2)
    assert u.shape == (20000, 2) and 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    np.testing.assert_array_equal(sample_uniforms(7, 3, np.array([5, 19999]), 2), u[[5, 19999]])


def test_a_model_with_preprocessing_layers_trains_and_predicts():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 6, 6, 1)).astype(np.uint8), rng.integers(0, 2, 64)
    model = Sequential([Input((6, 6, 1)), Rescaling(1 / 255), RandomFlip(seed=0),
                        RandomTranslation(0.2, 0.2, seed=0), Flatten(), Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="sgd")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    p1, p2 = model.predict(x, verbose=0), model.predict(x, verbose=0)
    np.testing.assert_array_equal(p1, p2)                     # off at inference: predictions are deterministic
