"""The renderer in the loop (``model.feedback``): the mean mesh is rendered, and a second
encoder of the image beside that render corrects the mean of p(m | z)."""

import numpy as np
import pytest
import torch

from gen3d.mesh_model import MeshModel, MeshModelConfig, images_to_tensor


def _model(feedback=1, **kw):
    torch.manual_seed(0)
    cfg = MeshModelConfig(hidden=16, channels=8, shape_degree=2, colour="uniform",
                          feedback=feedback, **kw)
    return MeshModel(cfg, 32)


class Recorder:
    """A stand-in renderer: remembers the actions it was given, returns a fixed image."""

    def __init__(self):
        self.calls = []

    def __call__(self, actions):
        self.calls.append(actions)
        return torch.full((len(actions), 3, 32, 32), 0.25)


def _shifting(**kw):
    """A feedback model whose correction is a known constant b (head weights zero), and b."""
    model = _model(**kw)
    model.attach_renderer(Recorder())
    b = torch.linspace(-0.3, 0.1, model.decoder.dim)
    with torch.no_grad():
        model.fb_head.bias.copy_(b)
    return model, b


def _plain_twin(model):
    """The same network without the feedback passes."""
    plain = _model(feedback=0)
    plain.load_state_dict(model.state_dict(), strict=False)
    return plain


def test_each_pass_renders_the_mean_corrected_so_far_with_no_gradient_through_it():
    model = _model(feedback=2)
    rec = Recorder()
    model.attach_renderer(rec)
    b = torch.linspace(-0.2, 0.2, model.decoder.dim)
    with torch.no_grad():
        model.fb_head.bias.copy_(b)  # weights zero: each pass adds b
    x = torch.rand(3, 3, 32, 32)
    u = _plain_twin(model).mean_params(x)
    torch.testing.assert_close(model.mean_params(x), u + 2 * b)
    assert len(rec.calls) == 2 and not any(a.requires_grad for a in rec.calls)
    torch.testing.assert_close(rec.calls[0], model.to_actions(u, x))
    torch.testing.assert_close(rec.calls[1], model.to_actions(u + b, x))


def test_a_fresh_model_corrects_nothing():
    model = _model()
    model.attach_renderer(Recorder())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.mean_params(x), _plain_twin(model).mean_params(x))


def test_samples_are_drawn_around_the_corrected_mean_and_the_score_reaches_the_correction():
    model, b = _shifting()
    x = torch.rand(2, 3, 32, 32)
    s = model.sample(x, 5, generator=torch.Generator().manual_seed(4))
    t = _plain_twin(model).sample(x, 5, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(s.mean - t.mean, b.expand_as(s.mean))
    torch.testing.assert_close(s.m - t.m, b.expand_as(s.m))  # the same noise, shifted
    s.logp.sum().backward()
    # d/db of sum log N(m; mean + b, std^2) = sum (m - mean) / std^2, m held fixed
    want = ((s.m - s.mean.detach()) / model.std().detach() ** 2).sum((0, 1))
    torch.testing.assert_close(model.fb_head.bias.grad, want)
    assert model.fb_encoder.net[0].weight.grad is not None


def test_a_feedback_model_without_a_renderer_says_how_to_attach_one():
    model = _model()
    with pytest.raises(RuntimeError, match="attach_renderer"):
        model.mean_params(torch.rand(1, 3, 32, 32))


def test_the_learner_renders_the_feedback_as_it_rendered_the_data():
    from envs import spaces
    from envs.renderer import MeshRenderer
    from learners.mesh_eval import attach_renderer

    model = _model()
    r = MeshRenderer(32, 32, 8)
    try:
        attach_renderer(model, r)
        actions = model.to_actions(torch.randn(4, model.decoder.dim) * 0.3)
        got = model.renderer(actions)
        want = r.render_rays(**spaces.unpack(actions.numpy().astype(np.float32))).rgb
        assert got.shape == (4, 3, 32, 32)
        torch.testing.assert_close(got, images_to_tensor(want))
        assert (want > 0).any()  # a mesh was drawn, not an empty frame
    finally:
        r.release()


def test_a_run_with_feedback_trains_scores_and_rescores_from_its_directory(tmp_path):
    from benchmarks.common import load_run
    from learners.mesh_eval import infer_actions
    from learners.mesh_train import run
    from tests.test_mesh_train import tiny

    cfg = tiny(tmp_path)
    cfg.model.feedback = 1
    report = run(cfg)
    assert 0 < report["scores"]["iou"] <= 1
    _, model = load_run(str(tmp_path / "runs/tiny"))
    assert model.renderer is not None
    x = np.zeros((2, 32, 32, 3), np.uint8)
    assert np.isfinite(infer_actions(model, x)).all()
    # benchmarks/feedback.py rescored: with its passes, the report's own held-out IoU
    from benchmarks.feedback import pass_rows
    from gen3d.data import mesh_images
    from learners.mesh_train import local_renderer, render_fn

    r = local_renderer(cfg)
    try:
        _, test = mesh_images.load(cfg.data, render_fn(r))
        rows = pass_rows(model, r, test, [1, 0])
    finally:
        r.release()
    assert rows[0]["iou"] == pytest.approx(report["scores"]["iou"], abs=1e-9)
    assert 0 <= rows[1]["iou"] <= 1 and model.cfg.feedback == 1


def test_the_correction_prior_is_exact_carried_by_the_loss_and_holds_only_the_feedback():
    from gen3d.estimators import build
    from learners.mesh_step import surrogate

    model, b = _shifting(feedback_std=0.1)
    x = torch.rand(2, 3, 32, 32)
    s = model.sample(x, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(s.correction_prior, (b ** 2).sum().expand(2) / (2 * 0.01))
    est, reward = build("rloo"), torch.randn(2, 3)
    with_prior, _ = surrogate(est, s, x, reward)
    prior = s.correction_prior
    s.correction_prior = None
    without, _ = surrogate(est, s, x, reward)
    torch.testing.assert_close(with_prior - without, prior.mean())
    prior.mean().backward()
    torch.testing.assert_close(model.fb_head.bias.grad, b / 0.01)  # d/db of |b|^2 / (2 s^2)
    assert model.write.weight.grad is None and model.encoder.net[0].weight.grad is None
