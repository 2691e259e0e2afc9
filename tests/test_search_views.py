"""What self-imitation's bests search with beside the soft line: the second view's soft
silhouette term (``learners.pathwise.ViewOracle``) against GL's second-view reward and
against the mesh turned by hand, and the depth flip proposal (``train.self_imitation_search_flip``)."""

import numpy as np
import pytest
import torch

from envs import spaces
from gen3d import geometry as geo
from gen3d.softras import SoftRasteriser
from tests.test_mesh_step import small_model_and_oracle


def random_actions(b: int, seed: int, size: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = np.clip(0.6 + size * rng.standard_normal((b, geo.N_RAYS)), 0.2, 1.2)
    return spaces.pack(lengths, geo.matrix_to_axis_angle(geo.random_rotation(rng, b)),
                       rng.uniform(-0.3, 0.3, (b, 3)), rng.uniform(0.1, 0.9, (b, geo.N_RAYS, 3)))


def test_a_turned_soft_render_is_the_soft_render_of_the_mesh_turned_about_its_centre():
    a = random_actions(5, 0)
    turn = geo.vertical_turn(90.0)
    lights = geo.Lights()
    lights = (np.array(lights.directions), np.array(lights.colours), np.array(lights.ambient))
    got = SoftRasteriser(40, 40, lights, turn=turn).render_actions(torch.from_numpy(a))
    plain = SoftRasteriser(40, 40, lights)
    want = plain.render_actions(torch.from_numpy(geo.turn_actions(a, turn)))
    torch.testing.assert_close(got.alpha, want.alpha, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.rgb, want.rgb, atol=1e-4, rtol=0)
    before = plain.render_actions(torch.from_numpy(a)).alpha
    assert (before - got.alpha).abs().mean() > 0.02  # turned, not the same view


def view_setup(weight: float, sigma: float = 0.1):
    from learners.pathwise import make_view_oracle

    cfg, model, oracle = small_model_and_oracle("rloo")
    cfg.data.second_view, cfg.train.second_view_weight, cfg.train.sigma = 90.0, weight, sigma
    rng = np.random.default_rng(2)
    masks = rng.random((4, 32, 32)) < 0.2
    masks[:, 8:24, 6:20] = True
    return cfg, model, oracle, masks, make_view_oracle(cfg, model, masks)


def test_the_soft_view_term_is_the_weighted_gl_silhouette_likelihood(renderer):
    """Sharp soft edges against GL's unlit white silhouettes of the turned meshes (what the
    second pool scores): the same log-likelihood to within the edge pixels' rounding."""
    from envs.renderer import MeshRenderer
    from learners.mesh_step import UNLIT, silhouette_actions, silhouette_images
    from learners.pathwise import ViewOracle

    _, model, _, masks, soft = view_setup(0.25)
    m = 0.3 * torch.randn(4, 2, model.decoder.dim, generator=torch.Generator().manual_seed(5))
    idx = np.array([3, 1, 0, 2])
    sr = soft.softras
    sharp = SoftRasteriser(32, 32, (sr._np["light_dir"], sr._np["light_rgb"], sr._np["ambient"]),
                           sigma=0.02, turn=sr._np["turn"])
    got = ViewOracle(model, sharp, 0.1, masks, 0.25).loglik(m, idx).detach().numpy()
    with torch.no_grad():
        actions = model.decoder(m).reshape(8, -1).numpy()
    gl = MeshRenderer(32, 32, 8, lights=UNLIT)
    rgb = gl.render_rays(**spaces.unpack(silhouette_actions(actions, geo.vertical_turn(90.0)))).rgb
    target = silhouette_images(masks[np.repeat(idx, 2)])
    want = 0.25 * spaces.gaussian_loglik(target, rgb, 0.1).reshape(4, 2)
    best = 0.25 * spaces.gaussian_loglik(target, target, 0.1).reshape(4, 2)
    assert np.abs(got - want).max() < 0.03 * np.abs(want - best).min()
    assert np.abs(want - best).min() > 100  # the meshes are not the targets


def test_the_search_climbs_both_views_with_a_view_term():
    """The line's direction is the exact gradient of the image's soft log-likelihood plus
    the view's, normalised to RMS 1."""
    from learners.best_search import SoftLineSearch

    _, model, oracle, _, view = view_setup(0.5)
    best = 0.05 * torch.randn(2, model.decoder.dim, generator=torch.Generator().manual_seed(3))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    idx = np.array([1, 3])
    p = SoftLineSearch(oracle, 4, 0.04, view).proposals(best, x, idx)
    m = best.clone().requires_grad_()
    (oracle.loglik(m[:, None], x) + view.loglik(m[:, None], idx)).sum().backward()
    unit = m.grad / m.grad.pow(2).mean(1, keepdim=True).sqrt()
    sizes = 0.04 * 2.0 ** torch.arange(-2.0, 2.0)
    torch.testing.assert_close(p - best[:, None], sizes[None, :, None] * unit[:, None],
                               rtol=1e-4, atol=1e-6)
    alone = SoftLineSearch(oracle, 4, 0.04).proposals(best, x)
    assert (alone - p).abs().max() > 1e-3  # the view's term moved the direction


def test_a_flip_is_one_more_proposal_the_best_mirrored_front_to_back():
    from gen3d import camera_mirrors as cm
    from learners.self_imitation import SelfImitation

    _, model, _ = small_model_and_oracle("rloo")
    flip = cm.depth_flip(model.decoder)
    dim = model.decoder.dim
    for search in (0, 3):
        replay = SelfImitation(4, dim, "cpu", search=search, search_std=0.05,
                               jumps=[(flip, torch.zeros(dim))])
        assert replay.searches
        replay.m.copy_(torch.randn(4, dim, generator=torch.Generator().manual_seed(search)))
        p = replay.proposals(np.array([2, 0]), torch.Generator().manual_seed(0))
        assert p.shape == (2, search + 1, dim)
        torch.testing.assert_close(p[:, -1], replay.m[[2, 0]] @ flip.T)
    assert not SelfImitation(4, dim, "cpu").searches


def test_the_flip_is_counted_and_needs_self_imitation():
    from learners.mesh_config import MeshTrainConfig

    tc = MeshTrainConfig(batch=16, samples=16, self_imitation=0.25, self_imitation_search=8,
                         self_imitation_search_flip=True)
    assert tc.renders_per_step == 16 * (16 + 8 + 1)
    with pytest.raises(ValueError, match="self_imitation_search_flip.*self_imitation > 0"):
        MeshTrainConfig(self_imitation_search_flip=True)


def test_the_views_direction_needs_the_soft_search_and_a_second_view(tmp_path):
    from learners.config import ConfigError, load
    from learners.mesh_config import MeshTrainConfig

    with pytest.raises(ValueError, match="self_imitation_search_views.*self_imitation_search_soft"):
        MeshTrainConfig(self_imitation=0.25, self_imitation_search=4, self_imitation_search_views=True)
    with pytest.raises(ConfigError, match="self_imitation_search_views.*data.second_view"):
        load("configs/primitives.yaml", ["train.self_imitation_search_views=true"])
    _, cfg = load("configs/primitives.yaml", ["train.self_imitation_search_views=true",
                                              "data.second_view=90"])
    assert cfg.train.self_imitation_search_views


def test_the_replay_searches_with_the_view_term_only_when_asked(tmp_path):
    from gen3d.mesh_model import MeshModel
    from learners.config import load
    from learners.mesh_train import make_estimator, make_replay

    masks = np.zeros((3, 64, 64), bool)
    for views in (True, False):
        _, cfg = load("configs/primitives.yaml", [f"train.self_imitation_search_views={views}",
                                                  "data.second_view=90", "model.hidden=8"])
        model = MeshModel(cfg.model, 64)
        replay = make_replay(cfg, model, make_estimator(cfg), 3, "cpu", masks)
        assert (replay.line.view is not None) == views
        assert replay.jumps == [] and replay.searches


def test_a_second_view_doubles_the_renders_a_step_asks_for():
    from learners.config import load

    _, one = load("configs/primitives.yaml", [])
    _, two = load("configs/primitives.yaml", ["data.second_view=90"])
    assert one.renders_per_step == one.train.renders_per_step == 16 * (16 + 8)
    assert two.renders_per_step == 2 * one.renders_per_step


def test_the_replay_takes_the_flip_and_the_depth_scales_as_its_jumps():
    from gen3d import camera_mirrors as cm
    from gen3d.depth_scale import depth_scale
    from gen3d.mesh_model import MeshModel
    from learners.config import load
    from learners.mesh_train import make_estimator, make_replay

    _, cfg = load("configs/primitives.yaml", ["train.self_imitation_search_flip=true",
                                              "train.self_imitation_search_depth=1.25",
                                              "model.hidden=8"])
    model = MeshModel(cfg.model, 64)
    replay = make_replay(cfg, model, make_estimator(cfg), 3, "cpu")
    expected = [(cm.depth_flip(model.decoder), torch.zeros(model.decoder.dim)),
                depth_scale(model.decoder, 1.25), depth_scale(model.decoder, 0.8)]
    assert len(replay.jumps) == 3
    for (a, b), (a2, b2) in zip(replay.jumps, expected):
        torch.testing.assert_close(a, a2)
        torch.testing.assert_close(b, b2)
    p = replay.proposals(np.array([0]), torch.Generator().manual_seed(0), torch.zeros(1, 3, 64, 64))
    assert p.shape[1] == cfg.train.self_imitation_search + 3
