"""Shape templates (``model.shape_templates``): each image's mean shape is pulled to its
nearest learned template by an exact Gaussian prior, and the step's loss carries it."""

import pytest
import torch

from gen3d.estimators import build
from gen3d.mesh_model import MeshModel, MeshModelConfig
from learners.mesh_step import surrogate


def _model(**kw):
    torch.manual_seed(0)
    cfg = MeshModelConfig(hidden=16, channels=8, shape_degree=2, colour="uniform", rotation=True,
                          shape_templates=3, template_std=0.1, **kw)
    return MeshModel(cfg, 32)


def test_the_prior_is_the_distance_to_the_nearest_template_and_moves_only_it():
    model = _model()
    sl = model.decoder.slices["shape"]
    with torch.no_grad():
        model.templates.copy_(torch.stack([torch.full((9,), v) for v in (0.0, 1.0, -1.0)]))
    u = torch.zeros(2, model.decoder.dim)
    u[0, sl] = 0.8   # nearest: the template of ones, 9 * 0.2^2 away
    u[1, sl] = -0.3  # nearest: the zero template, 9 * 0.3^2 away
    u.requires_grad_(True)
    prior = model.template_prior(u)
    torch.testing.assert_close(prior, torch.tensor([9 * 0.04, 9 * 0.09]) / (2 * 0.01))
    prior.sum().backward()
    g = model.templates.grad
    # (T - s) / std^2: a descent step moves each template towards the shapes nearest it
    torch.testing.assert_close(g[0], torch.full((9,), 0.3 / 0.01))  # towards -0.3
    torch.testing.assert_close(g[1], torch.full((9,), 0.2 / 0.01))  # towards 0.8
    assert torch.equal(g[2], torch.zeros(9))                         # nobody's nearest
    assert u.grad[:, sl.stop:].abs().sum() == 0  # only the shape is held


def test_the_steps_loss_carries_the_prior_exactly():
    model = _model()
    x = torch.rand(2, 3, 32, 32)
    s = model.sample(x, 4, generator=torch.Generator().manual_seed(1))
    assert s.shape_prior.shape == (2,) and (s.shape_prior > 0).all()
    est, reward = build("rloo"), torch.randn(2, 4)
    with_prior, _ = surrogate(est, s, x, reward)
    s.shape_prior = None
    without, _ = surrogate(est, s, x, reward)
    torch.testing.assert_close(with_prior - without, model.template_prior(s.mean[:, 0]).mean())


def test_templates_need_an_object_frame():
    with pytest.raises(ValueError, match="shape_templates: 4 needs rotation: true"):
        MeshModelConfig(shape_templates=4)
