"""The examples learn on real data: the bars the engine issue sets."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))


def test_mlp_example_reaches_75_percent_on_held_out_pima(capsys):
    import train_mlp
    accuracy = train_mlp.main(["--verbose", "0"])
    assert accuracy >= 0.75
    assert "held-out accuracy" in capsys.readouterr().out


@pytest.mark.timeout(600)
def test_cnn_example_reaches_97_percent_on_mnist_test_set(capsys):
    import train_cnn
    accuracy = train_cnn.main(["--verbose", "0"])     # 5k training images, 10 epochs, the 10k test set
    assert accuracy >= 0.97
    assert "10000 held-out images" in capsys.readouterr().out
