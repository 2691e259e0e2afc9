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


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny tensors: on a 2-core machine torch's extra threads only spin and slow
    them (20x was seen under load), so every test runs torch on one thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
