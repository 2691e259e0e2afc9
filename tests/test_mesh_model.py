"""The mesh model's pose and colour parameterisations: valid rotations that reach the
renderer, and a palette that holds sharp, distinct side colours."""

import math

import numpy as np
import torch

from envs import spaces
from gen3d import geometry as geo
from gen3d import primitives as prim
from gen3d.mesh_decoder import ball_rotation
from gen3d.mesh_model import MeshDecoder, MeshModelConfig


def test_ball_rotation_is_a_smooth_bijection_onto_the_ball_of_radius_pi():
    v = torch.randn(2000, 3, dtype=torch.float64) * 3
    r = ball_rotation(v)
    n = r.norm(dim=1)
    assert (n < math.pi).all() and (r.abs() <= math.pi).all()  # inside the action's bounds
    # the direction is kept and the angle is pi * tanh(|v| / pi): invertible
    torch.testing.assert_close(r / n[:, None], v / v.norm(dim=1, keepdim=True))
    torch.testing.assert_close(torch.atanh(n / math.pi) * math.pi, v.norm(dim=1))
    small = torch.tensor([[1e-3, -2e-3, 0.5e-3]], dtype=torch.float64)
    torch.testing.assert_close(ball_rotation(small), small, rtol=1e-6, atol=0)  # identity at 0
    assert torch.equal(ball_rotation(torch.zeros(1, 3)), torch.zeros(1, 3))


def test_the_inferred_rotation_turns_the_object_frame_shape_in_the_renderer(renderer):
    dec = MeshDecoder(MeshModelConfig(rotation=True, shape_degree=2, colour="uniform"))
    m = torch.zeros(1, dec.dim)
    # an object-frame shape longer along x (degree-2 harmonics), turned 70 degrees about z
    ys = torch.from_numpy(geo.real_sph_harm(geo.ico_rays(), 2)).double()
    x2 = torch.from_numpy(geo.ico_rays()[:, 0] ** 2).double()
    m[0, dec.slices["shape"]] = torch.linalg.lstsq(ys, 0.9 * x2[:, None]).solution[:, 0].float()
    v = torch.tensor([0.0, 0.0, math.radians(70)])
    # the unconstrained value whose ball rotation is v
    m[0, dec.slices["rotation"]] = v * (math.pi * math.atanh(v.norm() / math.pi) / v.norm())
    a = dec(m).numpy()
    np.testing.assert_allclose(a[0, geo.ACTION_SLICES["rotation"]], v.numpy(), atol=1e-5)
    got = renderer.render_rays(**spaces.unpack(a), mask=True).mask[0]
    turned = geo.transform_points(geo.ray_mesh(a[0, geo.ACTION_SLICES["lengths"]]), v.numpy())
    want = renderer.render_meshes([(turned, geo.ico_faces())], mask=True).mask[0]
    unturned = renderer.render_rays(a[:, geo.ACTION_SLICES["lengths"]], mask=True).mask[0]
    assert (got & want).sum() / (got | want).sum() > 0.99
    assert (got & unturned).sum() / (got | unturned).sum() < 0.8


def test_a_palette_holds_sharp_distinct_colours_and_they_reach_the_renderer(renderer):
    cfg = MeshModelConfig(colour="palette", palette_size=2, colour_degree=1, palette_sharpness=5.0)
    dec = MeshDecoder(cfg)
    yc = dec.Yc.numpy()
    rays = geo.ico_rays()
    col = int(np.argmax(np.abs(yc.T @ rays[:, 0])))  # the degree-1 harmonic along x
    sign = float(np.sign(yc[:, col] @ rays[:, 0]))
    c = torch.zeros(1, 3 * 2 + 2 * yc.shape[1])
    c[0, :6] = torch.tensor([6.0, -6, -6, -6, -6, 6])  # palette: red, blue
    c[0, 6 + col] = 10.0 * sign  # red where x > 0
    c[0, 6 + yc.shape[1] + col] = -10.0 * sign
    m = torch.zeros(1, dec.dim)
    m[0, dec.slices["colour"]] = c
    a = dec(m).numpy()
    colours = a[0, geo.ACTION_SLICES["colours"]].reshape(162, 3)
    red = torch.sigmoid(torch.tensor([6.0, -6, -6])).numpy()
    blue = red[::-1]
    far = np.abs(rays[:, 0]) > 0.25  # away from the boundary the colours are the palette's
    right, left = far & (rays[:, 0] > 0), far & (rays[:, 0] < 0)
    np.testing.assert_allclose(colours[right], red[None].repeat(right.sum(), 0), atol=0.02)
    np.testing.assert_allclose(colours[left], blue[None].repeat(left.sum(), 0), atol=0.02)
    img = renderer.render_rays(**spaces.unpack(a), mask=True)
    rgb, mask = img.rgb[0].astype(float), img.mask[0]
    right, left = rgb[:, 40:][mask[:, 40:]].mean(0), rgb[:, :24][mask[:, :24]].mean(0)
    assert right[0] > 3 * right[2] and left[2] > 3 * left[0]  # +x is the image's right


def test_every_colour_model_decodes_to_colours_in_range():
    for colour in ("sh", "raw", "uniform", "palette"):
        for rotation in (False, True):
            dec = MeshDecoder(MeshModelConfig(colour=colour, rotation=rotation))
            a = dec(torch.randn(5, dec.dim) * 3).numpy()
            lo, hi = spaces.bounds()
            assert (a >= lo - 1e-6).all() and (a <= hi + 1e-6).all(), colour


def test_colour_and_rotation_search_their_own_initial_width():
    import pytest

    from gen3d.mesh_model import MeshModel

    cfg = MeshModelConfig(hidden=16, channels=8, rotation=True, init_std=0.02, min_std=0.005,
                          init_std_colour=0.3, init_std_rotation=0.2)
    model = MeshModel(cfg, 32)
    sl = model.decoder.slices
    s = model.sample(torch.zeros(2, 3, 32, 32), 4000, generator=torch.Generator().manual_seed(0))
    spread = (s.m - s.mean).detach().reshape(-1, model.decoder.dim).std(0)
    for part, want in (("shape", 0.025), ("translation", 0.025), ("colour", 0.305), ("rotation", 0.205)):
        got = spread[sl[part]]
        torch.testing.assert_close(got, torch.full_like(got, want), rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="init_std_colour"):
        MeshModelConfig(init_std_colour=0.001)


def test_each_degree_of_the_shape_searches_its_own_initial_width():
    """``init_std_by_degree``: degree l's harmonics (the shape parameters l^2 .. (l+1)^2 - 1)
    take the l-th width, later degrees ``init_std``; the degree-1 ones are the harmonics linear
    in the ray's direction (which way the shape reaches)."""
    import pytest

    from gen3d.mesh_model import MeshModel

    cfg = MeshModelConfig(hidden=16, channels=8, shape_degree=4, init_std=0.02, min_std=0.005,
                          init_std_by_degree=[0.03, 0.1, 0.05])
    model = MeshModel(cfg, 32)
    sl = model.decoder.slices["shape"]
    s = model.sample(torch.zeros(2, 3, 32, 32), 4000, generator=torch.Generator().manual_seed(0))
    spread = (s.m - s.mean).detach().reshape(-1, model.decoder.dim).std(0)[sl]
    want = torch.tensor([0.03] + [0.1] * 3 + [0.05] * 5 + [0.02] * 16) + cfg.min_std
    torch.testing.assert_close(spread, want, rtol=0.05, atol=0)
    linear = model.decoder.Ys[:, 1:4].numpy()
    assert _fit_residual(geo.ico_rays(), linear) < 1e-5
    assert _fit_residual(geo.ico_rays(), model.decoder.Ys[:, 4:9].numpy()) > 0.1
    for bad, match in (({"init_std_by_degree": [0.1] * 6}, "at most shape_degree \\+ 1 = 5"),
                       ({"init_std_by_degree": [0.1, 0.001]}, "finite and >= min_std"),
                       ({"init_std_by_degree": [0.1], "shape": "raw"}, "needs shape: sh")):
        with pytest.raises(ValueError, match=match):
            MeshModelConfig(shape_degree=4, **bad)


def _fit_residual(basis: np.ndarray, values: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(basis, values, rcond=None)
    return float(np.abs(basis @ coef - values).max())


def test_the_mirror_basis_holds_every_kind_upright_and_no_kind_tilted():
    """Each primitive kind in its own frame is even in x and z: its log ray lengths fit the
    mirror basis exactly as well as all harmonics of the same degree; tilted, they do not."""
    rays = geo.ico_rays()
    full, mirror = geo.real_sph_harm(rays, 6), geo.mirror_sph_harm(rays, 6)
    assert mirror.shape == (162, 16)
    gram = mirror.T @ mirror
    np.testing.assert_allclose(gram / gram[0, 0], np.eye(16), atol=1e-4)
    tilt = geo.axis_angle_to_matrix(np.array([0.5, 0.0, 0.3]))
    for kind in ("cube", "cylinder", "cone", "pyramid"):
        m = prim.primitive(kind)
        upright = np.log(geo.ray_hits(m.verts, m.faces, rays)[0])
        assert _fit_residual(mirror, upright) < _fit_residual(full, upright) + 1e-5
        tilted = np.log(geo.ray_hits(m.verts @ tilt.T, m.faces, rays)[0])
        assert _fit_residual(mirror, tilted) > 2 * _fit_residual(full, tilted) + 0.02, kind


def test_a_mirror_shape_needs_the_rotation_to_carry_the_pose():
    import pytest

    with pytest.raises(ValueError, match="needs shape: sh and rotation: true"):
        MeshModelConfig(shape_symmetry="mirror")
    dec = MeshDecoder(MeshModelConfig(shape_degree=6, rotation=True, shape_symmetry="mirror"))
    assert dec.slices["shape"].stop - dec.slices["shape"].start == 16
