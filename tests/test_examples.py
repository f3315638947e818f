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


@pytest.mark.timeout(300)
def test_cnn_example_streams_a_packed_directory_on_two_workers(tmp_path):
    """`distnet-data pack --from-mnist` then `train_cnn.py --data DIR` under mpirun: each rank reads its slices."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    mnist = os.path.join(root, "distnet", "data", "bundled", "mnist")
    env = {**os.environ, "PYTHONPATH": root}
    pack = subprocess.run([sys.executable, "-m", "distnet.data", "pack", "--from-mnist",
                           os.path.join(mnist, "t10k-images-idx3-ubyte.gz"),
                           os.path.join(mnist, "t10k-labels-idx1-ubyte.gz"), str(tmp_path / "packed")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert pack.returncode == 0, pack.stderr
    from tests.parallel.mpi_helpers import mpirun_path, require_mpi
    require_mpi()
    res = subprocess.run([mpirun_path(), "-n", "2", sys.executable, os.path.join(root, "examples", "train_cnn.py"),
                          "--data", str(tmp_path / "packed"), "--epochs", "1", "--verbose", "0"],
                         capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    accuracy = float(res.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.9 and "2 worker(s)" in res.stdout, res.stdout


@pytest.mark.timeout(400)
def test_resnet_example_trains_a_residual_network_on_two_workers():
    """A ResNet-8 (--blocks 1) for 2 epochs on the bundled MNIST under mpirun -n 2: measured 95.6% test accuracy."""
    import subprocess
    from tests.parallel.mpi_helpers import mpirun_path, require_mpi
    require_mpi()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([mpirun_path(), "-n", "2", sys.executable, os.path.join(root, "examples", "train_resnet.py"),
                          "--blocks", "1", "--epochs", "2", "--verbose", "0"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root}, timeout=360)
    assert res.returncode == 0, res.stderr[-3000:]
    accuracy = float(res.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.93 and "2 worker(s)" in res.stdout, res.stdout
