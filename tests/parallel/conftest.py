"""Fixtures of the multi-process tests."""
import pytest


@pytest.fixture
def ray_tmpdir():
    """A short private RAY_TMPDIR (Ray's socket paths must stay under 108 bytes) for a test that starts Ray
    itself, so that nothing lands in the machine's shared /tmp/ray; removed after the test."""
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix="dray")
    yield path
    shutil.rmtree(path, ignore_errors=True)
