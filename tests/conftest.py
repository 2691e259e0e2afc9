import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def renderer():
    """One GL context for the session's renderer tests (64x64, up to 64 meshes a draw)."""
    from envs.renderer import MeshRenderer

    r = MeshRenderer(64, 64, max_batch=64)
    yield r
    r.release()
