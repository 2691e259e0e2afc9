"""The pathwise term beside the score function (``train.soft_mean``, learners/soft_mean.py):
its gradient moves a mesh onto the silhouette GL draws, each image pulls with the weight
normalised RLOO gives it, and the step adds exactly that gradient to the estimator's."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_mesh_step import grads, small_model_and_oracle


def sphere_setup(renderer):
    from gen3d.mesh_model import MeshModel
    from learners.config import from_dict
    from learners.mesh_train import MeshRunConfig
    from learners.pathwise import make_oracle

    cfg = from_dict(MeshRunConfig, {"data": {"size": 64}, "model": {
        "hidden": 8, "channels": 4, "shape_degree": 0, "colour": "uniform"}})
    model = MeshModel(cfg.model, 64)
    return model, make_oracle(cfg, model)


def test_its_gradient_steps_grow_a_small_sphere_to_the_radius_gl_drew(renderer):
    """A grey sphere of radius 0.9 drawn by GL; the term's gradient in the radius alone (the
    position, which trades off against it in perspective, held at the truth), from radius 0.6
    (the base sphere), finds it to 2% and the silhouette to IoU 0.97."""
    from gen3d import geometry as geo
    from learners.soft_mean import SoftMean

    model, oracle = sphere_setup(renderer)
    y00 = float(model.decoder.Ys[0, 0])

    def params(c):  # the shape's one coefficient; centred, grey
        return torch.cat([c.reshape(1), torch.zeros(model.decoder.dim - 1)])[None, None]

    def draw(c):
        a = model.decoder(params(c))[0].detach().numpy()
        sl = geo.ACTION_SLICES
        return renderer.render_rays(a[:, sl["lengths"]], colours=a[:, sl["colours"]].reshape(1, -1, 3),
                                    mask=True)

    target = draw(torch.tensor(float(np.log(0.9 / 0.6) / y00)))
    image = torch.from_numpy(target.rgb).permute(0, 3, 1, 2).float() / 255
    c = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([c], lr=0.05)
    term = SoftMean(oracle, 1.0)
    for _ in range(80):
        opt.zero_grad()
        loss = term.loss(SimpleNamespace(mean=params(c)), image, torch.zeros(1, 4))
        assert loss.item() == 0.0  # the loss keeps reading as -ELBO
        loss.backward()
        opt.step()
    radius = 0.6 * float(torch.exp(y00 * c.detach()))
    assert abs(radius - 0.9) < 0.02 * 0.9, radius
    got = draw(c.detach()).mask
    iou = (got & target.mask).sum() / (got | target.mask).sum()
    assert iou > 0.97, iou


def test_each_image_pulls_with_the_weight_normalised_rloo_gives_it():
    """Two copies of one image and one mean; the first image's rewards spread with std 1, the
    second's with std 3: weights (std + 1) mean / (std + 1) = 1.5 and 0.75, so the first mean's
    gradient is exactly twice the second's."""
    from learners.soft_mean import SoftMean

    _, model, oracle = small_model_and_oracle("rloo")
    x = torch.rand(1, 3, 32, 32).repeat(2, 1, 1, 1)
    m = (0.05 * torch.randn(1, 1, model.decoder.dim)).repeat(2, 1, 1).requires_grad_()
    k = torch.tensor([-1.5, -0.5, 0.5, 1.5])
    reward = torch.stack([k / k.std(), 3 * k / k.std()])
    SoftMean(oracle, 2.0).loss(SimpleNamespace(mean=m), x, reward).backward()
    g = m.grad[:, 0]
    assert g[1].abs().sum() > 0
    torch.testing.assert_close(g[0], 2 * g[1], rtol=1e-4, atol=1e-3)
    m1 = m.detach()[:1].clone().requires_grad_()
    oracle.loglik(m1, x[:1]).sum().backward()
    torch.testing.assert_close(g[0], -2.0 * 1.5 / 2 * m1.grad[0, 0], rtol=1e-4, atol=1e-3)


def test_the_step_adds_exactly_the_terms_gradient_to_the_estimators():
    from gen3d.estimators import build
    from learners.mesh_step import MeshStep, RewardSource
    from learners.soft_mean import SoftMean

    _, model, oracle = small_model_and_oracle("rloo")
    x = torch.rand(3, 3, 32, 32)
    idx = np.arange(3)

    class Pool:  # rewards known without rendering: minus the squared norm of each action
        def submit(self, flat, target_idx):
            return -(flat ** 2).sum(1)

        def collect(self, ticket):
            return SimpleNamespace(rewards=ticket, wait_s=0.0)

    def step_grads(soft):
        model.zero_grad()
        step = MeshStep(model, build("rloo"), RewardSource(Pool()), microbatches=2, soft=soft)
        step(x, idx, 4, torch.Generator().manual_seed(5), 1)
        return grads(model)

    term = SoftMean(oracle, 0.7)
    without, with_term = step_grads(None), step_grads(term)
    model.zero_grad()
    gen = torch.Generator().manual_seed(5)
    for part in np.array_split(np.arange(3), 2):  # the same draws as the step's micro-batches
        noise = build("rloo").noise((len(part), 4, model.decoder.dim), generator=gen)
        s = model.sample(x[part], 4, noise=noise, generator=gen)
        r = -(s.actions.flatten(0, 1) ** 2).sum(1).reshape(len(part), 4)
        (term.loss(s, x[part], r) * len(part) / 3).backward()
    for a, b, c in zip(with_term, without, grads(model)):
        torch.testing.assert_close(a - b, c, rtol=1e-4, atol=1e-5)


def test_its_weight_falls_to_zero_at_its_fraction_of_the_run_and_no_soft_render_follows():
    from learners.mesh_optim import soft_factor
    from learners.mesh_config import MeshTrainConfig

    tc = MeshTrainConfig(steps=1000, soft_mean=3.0, soft_mean_until=0.5)
    assert [soft_factor(tc, s, 0.0) for s in (0, 250, 500, 900)] == [1.0, 0.5, 0.0, 0.0]
    assert soft_factor(MeshTrainConfig(steps=1000), 500, 0.0) == 0.5  # until 1: the whole run


def test_a_run_with_the_term_annealed_away_stops_soft_rendering(tmp_path, monkeypatch):
    from learners import soft_mean
    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    calls = []
    real = soft_mean.SoftMean.loss
    monkeypatch.setattr(soft_mean.SoftMean, "loss",
                        lambda self, *a: calls.append(self.weight) or real(self, *a))
    cfg = tiny(tmp_path, steps=6, microbatches=1, soft_mean=2.0, soft_mean_until=0.5)
    cfg.pool.backend = "local"
    run(cfg)
    assert calls == pytest.approx([2.0 * (1 - s / 3) for s in (1, 2)])  # step 3 on: weight 0
