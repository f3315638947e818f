import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from distnet import backend  # noqa: E402


@pytest.fixture
def float64():
    """Run a test in float64 (for finite-difference gradient checks), restoring float32 after."""
    backend.set_floatx("float64")
    yield
    backend.set_floatx("float32")


def numeric_grad(f, x, eps=1e-6, max_entries=60, seed=0):
    """Central differences of scalar f at (up to max_entries random) entries of x; returns (indices, grads)."""
    rng = np.random.default_rng(seed)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=min(max_entries, flat.size), replace=False)
    out = []
    for i in idx:
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out.append((fp - fm) / (2 * eps))
    return idx, np.array(out)


def assert_grad_close(analytic, x, f, rtol=1e-5, atol=1e-7, **kw):
    idx, num = numeric_grad(f, x, **kw)
    np.testing.assert_allclose(analytic.reshape(-1)[idx], num, rtol=rtol, atol=atol)


# -- the session-end leak check (tests/leaks.py): processes, /dev/shm files, Ray sessions left behind ----------
_leaks = {}


def pytest_sessionstart(session):
    from tests.leaks import LeakCheck
    _leaks["check"] = LeakCheck()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    check = _leaks.pop("check", None)
    if check is None:
        return
    _leaks["failures"], _leaks["warnings"] = check.finish()
    if _leaks["failures"] and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    failures, warnings = _leaks.get("failures", []), _leaks.get("warnings", [])
    if failures:
        terminalreporter.section("LEAK CHECK FAILED: the suite left these behind", sep="!", red=True, bold=True)
        for line in failures:
            terminalreporter.line(line, red=True)
    if warnings:
        terminalreporter.section("leak check: not traceable to this session", sep="-", yellow=True)
        for line in warnings:
            terminalreporter.line(line, yellow=True)
