"""Run a Python snippet under mpirun with N ranks, with a timeout so a hang fails fast."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mpirun_path():
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return here if os.path.exists(here) else shutil.which("mpirun")


def require_mpi():
    pytest.importorskip("mpi4py")
    if mpirun_path() is None:
        pytest.skip("mpirun not found (pip install 'distnet[mpi]')")


def run_mpi(n, code, tmp_path, timeout=120, args=(), env=None):
    """Run `code` on n ranks; returns the CompletedProcess (stdout, stderr as text)."""
    require_mpi()
    script = tmp_path / f"job_{n}.py"
    script.write_text(textwrap.dedent(code))
    full_env = {**os.environ, "PYTHONPATH": ROOT, "OMPI_ALLOW_RUN_AS_ROOT": "1",
                "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", **(env or {})}
    cmd = [mpirun_path(), "-n", str(n), sys.executable, str(script), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"mpirun -n {n} did not finish within {timeout}s (hang?)\nstdout: {e.stdout}\n"
                             f"stderr: {e.stderr}") from None
