"""The soft rasteriser against the GL renderer (the truth it imitates), and its gradients
against what GL shows when the mesh really changes."""

import numpy as np
import pytest
import torch

from envs import spaces
from envs.renderer import Lights
from gen3d import geometry as geo
from gen3d.softras import SoftRasteriser, axis_angle_to_matrix

LIGHTS = Lights().arrays()



def random_meshes(n: int, seed: int):
    return geo.random_ray_meshes(np.random.default_rng(seed), n)


@pytest.mark.parametrize("mode", ["edges", "faces"])
def test_silhouette_and_colour_agree_with_the_gl_renderer(renderer, mode):
    parts = random_meshes(24, seed=5)
    gl = renderer.render_rays(*parts, mask=True, as_float=True)
    soft = SoftRasteriser(64, 64, LIGHTS, sigma=0.02, mode=mode).render_rays(
        *map(torch.from_numpy, parts))
    mask = soft.alpha.numpy() > 0.5
    iou = (mask & gl.mask).sum((1, 2)) / (mask | gl.mask).sum((1, 2))
    assert iou.min() >= 0.95 and iou.mean() >= 0.99, iou  # measured: mean 0.9999 / 0.9997
    err = np.abs(soft.rgb.numpy() - gl.rgb)
    both = mask & gl.mask
    assert err[both].mean() < 0.02, err[both].mean()  # measured: 0.0017 / 0.0055
    assert err.mean() < 0.01, err.mean()  # over every pixel, background too
    # a camera and lights other than the defaults are followed too
    cam = geo.Camera(eye=(1.5, 2.0, 3.0), fov_y_deg=45)
    lights = Lights(directions=((0, 0, 1),), colours=((0.9, 0.8, 0.7),), ambient=(0.1, 0.1, 0.1))
    renderer.set_camera(cam)
    renderer.set_lights(lights)
    try:
        gl = renderer.render_rays(*[p[:6] for p in parts], mask=True, as_float=True)
    finally:
        renderer.set_camera(geo.Camera())
        renderer.set_lights(Lights())
    soft = SoftRasteriser(64, 64, lights.arrays(), camera=cam, sigma=0.02).render_rays(
        *[torch.from_numpy(p[:6]) for p in parts])
    mask = soft.alpha.numpy() > 0.5
    assert ((mask & gl.mask).sum((1, 2)) / (mask | gl.mask).sum((1, 2))).min() >= 0.95
    assert np.abs(soft.rgb.numpy() - gl.rgb)[mask & gl.mask].mean() < 0.02


def test_actions_and_chunks_give_the_same_images():
    parts = random_meshes(5, seed=2)
    actions = torch.from_numpy(spaces.pack(parts[0], parts[1], parts[2], parts[3]))
    a = SoftRasteriser(32, 32, LIGHTS, chunk=2).render_actions(actions.reshape(5, 1, -1))
    b = SoftRasteriser(32, 32, LIGHTS).render_rays(*map(torch.from_numpy, parts))
    assert a.rgb.shape == (5, 1, 32, 32, 3) and a.alpha.shape == (5, 1, 32, 32)
    torch.testing.assert_close(a.rgb[:, 0], b.rgb)
    torch.testing.assert_close(a.alpha[:, 0], b.alpha)


def test_axis_angle_matches_geometry_and_is_smooth_at_zero():
    aa = torch.tensor([[0.3, -1.2, 2.0], [1e-6, 0.0, -2e-6], [0.0, 0.0, 0.0]], dtype=torch.float64,
                      requires_grad=True)
    want = geo.axis_angle_to_matrix(aa.detach().numpy())
    np.testing.assert_allclose(axis_angle_to_matrix(aa).detach().numpy(), want, atol=1e-12)
    axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


def test_growing_a_sphere_grows_its_silhouette_as_fast_as_gl_shows(renderer):
    soft = SoftRasteriser(64, 64, LIGHTS, sigma=0.5)  # measured: within 5% of GL's rate
    for r0 in (0.6, 0.9):
        radius = torch.tensor(r0, requires_grad=True)
        soft.render_rays(radius.expand(1, geo.N_RAYS)).alpha.sum().backward()
        d = 0.1
        masks = renderer.render_rays(np.full((2, geo.N_RAYS), [[r0 + d], [r0 - d]], np.float32),
                                     mask=True).mask
        gl_rate = (masks[0].sum() - masks[1].sum()) / (2 * d)  # pixels per unit radius
        assert radius.grad > 0
        assert abs(float(radius.grad) / gl_rate - 1) < 0.1, (float(radius.grad), gl_rate)


def test_hidden_vertices_get_no_colour_gradient_and_visible_ones_a_positive_one():
    colours = torch.full((1, geo.N_RAYS, 3), 0.5, requires_grad=True)
    out = SoftRasteriser(64, 64, LIGHTS, sigma=0.5).render_rays(
        torch.full((1, geo.N_RAYS), 0.7), colours=colours)
    out.rgb.sum().backward()
    g = colours.grad[0].sum(1)
    facing = torch.tensor(geo.ico_rays()[:, 2])  # the camera sits on +z
    assert (g[facing < -0.3] == 0).all()  # the far side is culled and occluded
    assert (g[facing > 0.3] > 0).all()


@pytest.mark.parametrize("mode", ["edges", "faces"])
def test_a_face_with_no_area_leaves_every_gradient_finite(mode):
    """Three rays of one face at length 0 put its corners on one point: the face is left out,
    and its 1/area must not turn the zero gradient it gets into NaN (a training run died of
    it: one NaN gradient makes every weight NaN)."""
    sr = SoftRasteriser(32, 32, Lights().arrays(), sigma=0.5, mode=mode)
    face = list(geo.ico_faces()[0])
    lengths = torch.full((1, geo.N_RAYS), 0.7)
    lengths[0, face] = 0.0
    lengths.requires_grad_()
    out = sr.render_rays(lengths)
    (out.rgb.sum() + out.alpha.sum()).backward()
    assert torch.isfinite(lengths.grad).all()
    assert lengths.grad.abs().sum() > 0


def test_descending_the_pixel_loss_recovers_a_pose_and_size_rendered_by_gl(renderer):
    truth = {"r": 0.55, "t": (0.25, -0.15, 0.0)}
    target = renderer.render_rays(np.full((1, geo.N_RAYS), truth["r"], np.float32),
                                  translation=np.array([truth["t"]], np.float32), as_float=True)
    target = torch.from_numpy(target.rgb)
    log_r = torch.tensor(float(np.log(0.7)), requires_grad=True)
    txy = torch.zeros(2, requires_grad=True)  # depth and size trade off: keep z at the truth
    soft = SoftRasteriser(64, 64, LIGHTS, sigma=0.5)
    opt = torch.optim.Adam([log_r, txy], lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        out = soft.render_rays(log_r.exp().expand(1, geo.N_RAYS),
                               translation=torch.cat([txy, txy.new_zeros(1)])[None],
                               colours=torch.full((1, 3), 0.7))
        (out.rgb - target).pow(2).sum().backward()
        opt.step()
    assert abs(float(log_r.detach().exp()) - truth["r"]) < 0.01
    assert np.abs(txy.detach().numpy() - truth["t"][:2]).max() < 0.01


def test_oracle_loglik_is_the_gaussian_pixel_likelihood_of_the_soft_render(tmp_path):
    from learners.config import from_dict
    from learners.mesh_train import MeshRunConfig
    from learners.pathwise import make_oracle
    from gen3d.mesh_model import MeshModel

    cfg = from_dict(MeshRunConfig, {"data": {"size": 32}, "train": {"sigma": 0.2},
                                    "model": {"hidden": 8, "channels": 4, "colour": "uniform"},
                                    "estimator": {"name": "pathwise", "kwargs": {"sigma": 0.3}}})
    model = MeshModel(cfg.model, 32)
    oracle = make_oracle(cfg, model, "cpu")
    assert oracle.softras.sigma == 0.3  # the estimator's option reached the oracle
    m = torch.randn(2, 3, model.decoder.dim) * 0.3
    images = torch.rand(2, 3, 32, 32)
    ll = oracle.loglik(m, images)
    rgb = oracle.softras.render_actions(model.decoder(m)).rgb.detach().numpy()  # (2,3,32,32,3)
    target = images.permute(0, 2, 3, 1).numpy()
    want = np.stack([spaces.gaussian_loglik(target, rgb[:, k], 0.2) for k in range(3)], 1)
    np.testing.assert_allclose(ll.detach().numpy(), want, rtol=1e-4)
    # the mesh that made the image scores higher than a perturbed one, and the gradient says so
    x = oracle.render(m[:, :1]).detach()[:, 0]
    m2 = (m[:, :1] + 0.2 * torch.randn_like(m[:, :1])).requires_grad_(True)
    assert (oracle.loglik(m[:, :1], x) > oracle.loglik(m2, x)).all()
    oracle.loglik(m2, x).sum().backward()
    assert torch.isfinite(m2.grad).all() and m2.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="images must be"):
        oracle.loglik(m, torch.rand(2, 3, 16, 16))


def test_bad_inputs_are_named():
    soft = SoftRasteriser(16, 16, LIGHTS)
    with pytest.raises(ValueError, match="lengths: must have shape"):
        soft.render_rays(torch.ones(2, 10))
    with pytest.raises(ValueError, match="NaN"):
        soft.render_rays(torch.full((1, geo.N_RAYS), float("nan")))
    with pytest.raises(ValueError, match="translation: must have shape"):
        soft.render_rays(torch.ones(2, geo.N_RAYS), translation=torch.zeros(3))
    with pytest.raises(ValueError, match="softness"):
        SoftRasteriser(16, 16, LIGHTS, sigma=0)
    with pytest.raises(ValueError, match="mode"):
        SoftRasteriser(16, 16, LIGHTS, mode="blur")
    with pytest.raises(ValueError, match="lights"):
        SoftRasteriser(16, 16, (np.zeros(3), np.zeros(3), np.zeros(3)))


def test_bad_input_is_refused_by_name_and_an_empty_batch_renders_nothing():
    from envs.renderer import Lights
    from gen3d.softras import SoftRasteriser

    sr = SoftRasteriser(48, 32, Lights())  # a Lights object stands for its arrays
    lengths = torch.full((2, 162), 0.8)
    nan3 = torch.tensor([[0.0, float("nan"), 0.0]] * 2)
    for kwargs, words in [({"rotation": nan3}, "rotation: contains NaN"),
                          ({"translation": nan3}, "translation: contains NaN"),
                          ({"colours": torch.full((2, 162, 3), float("inf"))}, "colours: contains NaN")]:
        with pytest.raises(ValueError, match=words):
            sr.render_rays(lengths, **kwargs)
    with pytest.raises(ValueError, match="lengths: must be >= 0"):
        sr.render_rays(-lengths)
    with pytest.raises(TypeError, match="torch.as_tensor"):
        sr.render_rays(lengths.numpy())
    for bad in ({"chunk": 0}, {"sigma": float("inf")}):
        with pytest.raises(ValueError, match="chunk|sigma"):
            SoftRasteriser(8, 8, Lights(), **bad)
    with pytest.raises(ValueError, match="whole numbers"):
        SoftRasteriser(8.7, 8, Lights())
    empty = sr.render_rays(torch.zeros(0, 162))
    assert empty.rgb.shape == (0, 32, 48, 3) and empty.alpha.shape == (0, 32, 48)
    assert sr.render_actions(torch.zeros(0, 654)).alpha.shape == (0, 32, 48)
