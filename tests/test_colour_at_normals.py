"""Colours read at the surface normals (``model.colour_at: normals``): the harmonics in torch
against ``geometry.real_sph_harm``, vertex normals against analytic ones, a turned cube's six
side colours held exactly by its own facets (and not by the same harmonics over the rays), and
where the decoder's fit to the colours read sends its gradient."""

import dataclasses

import numpy as np
import pytest
import torch

from envs import spaces
from gen3d import geometry as geo
from gen3d import primitives as prim
from gen3d.harmonics import Harmonics
from gen3d.mesh_model import MeshDecoder, MeshModel, MeshModelConfig
from gen3d.ray_normals import RayNormals
from learners.mesh_eval import psnr


@pytest.mark.parametrize("degree", [0, 1, 2, 4, 6])
def test_the_torch_harmonics_are_geometrys_own(degree):
    d = np.random.default_rng(degree).normal(size=(300, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    got = Harmonics(degree)(torch.tensor(d, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, geo.real_sph_harm(d, degree), atol=2e-6)


def test_the_harmonics_gradient_is_finite_on_the_axes():
    axes = torch.eye(3, dtype=torch.float64).requires_grad_()
    Harmonics(4)(axes).sum().backward()
    assert torch.isfinite(axes.grad).all()


def test_a_spheres_normals_are_its_rays_and_a_cubes_flat_vertices_take_their_sides_normal():
    rays = torch.tensor(geo.ico_rays())
    got = RayNormals()(0.7 * rays[None])[0]
    assert (got * rays).sum(-1).min() > 0.999  # area weighting on uneven faces: within 2.6°
    verts, flat, side_normal, _ = _turned_cube(np.eye(3))
    got = RayNormals()(torch.tensor(verts[None], dtype=torch.float32))[0].numpy()
    assert flat.sum() > 40  # most vertices lie inside a side
    np.testing.assert_allclose(got[flat], side_normal[flat], atol=1e-5)


def _turned_cube(rot: np.ndarray):
    """A cube of edge 0.9 turned by ``rot`` on the model's rays: vertices (162, 3), which lie
    inside one side (all their faces' normals that side's), each vertex's side normal, side."""
    cube = prim.cube(0.9)
    verts = cube.verts @ rot.T
    lengths, face = geo.ray_hits(verts, cube.faces, geo.ico_rays())
    side = cube.side_ids[face]
    normals = geo.face_normals(verts, cube.faces)
    side_normal = np.stack([normals[cube.side_ids == s][0] for s in range(6)])[side]
    ray_verts = lengths[:, None] * geo.ico_rays()
    ray_face_n = geo.face_normals(ray_verts, geo.ico_faces())
    flat = np.ones(geo.N_RAYS, bool)
    for f, n in zip(geo.ico_faces(), ray_face_n):
        flat[f] &= np.abs(n - side_normal[f]).max(-1) < 1e-4
    return ray_verts, flat, side_normal, side


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_turned_cubes_six_side_colours_are_held_exactly_at_its_normals_and_not_at_its_rays(seed):
    rng = np.random.default_rng(seed)
    rot = geo.axis_angle_to_matrix(rng.normal(0, 1.5, 3))
    verts, flat, _, side = _turned_cube(rot)
    colours = rng.uniform(0.1, 0.9, (6, 3))[side]
    lengths = np.linalg.norm(verts, axis=1)
    actions = np.concatenate([lengths, np.zeros(6), colours.ravel()])[None]
    err = {}
    for at in ("rays", "normals"):
        dec = MeshDecoder(MeshModelConfig(colour_at=at))
        a = torch.tensor(actions, dtype=torch.float32)
        with torch.no_grad():  # fit over the flat vertices, decoded on the cube's own normals
            c = dec.params(a, torch.tensor(flat[None]))[:, dec.slices["colour"]]
            got = dec._colours(c, dec.colour_basis(a[:, :geo.N_RAYS]))[0].numpy()
        err[at] = np.abs(got[flat] - colours[flat]).max()
    assert err["normals"] < 2e-3  # six values on six normals: within degree 2's reach
    assert err["rays"] > 0.1     # a colour field over directions blurs across each side


def test_the_fit_to_the_colours_read_reaches_the_shape_only_when_asked():
    images = torch.rand(2, 3, 64, 64)
    grads = {}
    for reach in (False, True):
        torch.manual_seed(0)
        cfg = MeshModelConfig(hidden=16, channels=4, read_colours=True, colour_at="normals",
                              colour_fit_shape=reach, init_std=0.05)
        model = MeshModel(cfg, 64)
        with torch.no_grad():
            model.write.bias.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        s = model.sample(images, 3, generator=torch.Generator().manual_seed(2))
        s.colour_fit.sum().backward()
        g = model.write.weight.grad
        sl = model.decoder.slices
        grads[reach] = (g[sl["shape"]].abs().max(), g[sl["colour"]].abs().max())
    assert grads[False][0] == 0 and grads[False][1] > 0
    assert grads[True][0] > 0 and grads[True][1] > 0


REFUSED = [({"colour": "raw"}, "colour: sh or palette"),
           ({"colour": "uniform"}, "colour: sh or palette"),
           ({"colour_at": "rays", "colour_fit_shape": True}, "colour_at: normals"),
           ({"read_colours": False, "colour_fit_shape": True}, "read_colours")]


@pytest.mark.parametrize("change,needs", REFUSED)
def test_a_colour_model_without_harmonics_or_a_fit_without_normals_is_refused(change, needs):
    base = dict(colour_at="normals", read_colours=True)
    with pytest.raises(ValueError, match=needs):
        MeshModelConfig(**{**base, **change})
    dataclasses.replace(MeshModelConfig(), colour_at="normals")  # the default colours take it


def _cube_image(renderer, rot, cols):
    """The ray mesh of a cube of edge 0.9 turned by ``rot``, each face in its side's colour
    (its corners' majority side), rendered: (lengths (162,), image (1, 3, 64, 64) in [0, 1])."""
    cube = prim.cube(0.9)
    lengths, face = geo.ray_hits(cube.verts @ rot.T, cube.faces, geo.ico_rays())
    side = cube.side_ids[face]
    face_side = np.array([np.bincount(side[t], minlength=6).argmax() for t in geo.ico_faces()])
    rgb = renderer.render_rays(lengths[None].astype(np.float32),
                               colours=cols[face_side][None].astype(np.float32)).rgb
    return lengths.astype(np.float32), torch.tensor(rgb, dtype=torch.float32).permute(0, 3, 1, 2) / 255


def _train_render(renderer, model, lengths, image):
    """PSNR of the training render (``train_actions``) of a raw-shape mesh of these lengths
    against ``image``, and the render."""
    m = torch.zeros(1, model.decoder.dim)
    m[0, model.decoder.slices["shape"]] = torch.log(torch.tensor(lengths) / model.cfg.base_radius)
    got = renderer.render_rays(**spaces.unpack(model.train_actions(m, image).numpy())).rgb
    want = (image.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return float(psnr(got, want).mean()), got


@pytest.mark.parametrize("seed", [0, 1])
def test_a_training_render_with_colours_read_favours_the_true_shape_over_the_same_turned(renderer, seed):
    rng = np.random.default_rng(seed)
    rot = geo.axis_angle_to_matrix(rng.normal(0, 1.5, 3))
    truth, image = _cube_image(renderer, rot, rng.uniform(0.15, 0.9, (6, 3)))
    turn = geo.axis_angle_to_matrix(np.deg2rad(25) * np.array([0.6, 0.8, 0]))
    turned, _ = _cube_image(renderer, turn @ rot, np.ones((6, 3)))
    model = MeshModel(MeshModelConfig(shape="raw", colour_at="normals", read_colours=True,
                                      train_colours="read", hidden=8, channels=4), 64)
    right, _ = _train_render(renderer, model, truth, image)
    wrong, _ = _train_render(renderer, model, turned, image)
    assert right > 25 and right > wrong + 3, (right, wrong)


def test_a_vertex_over_the_background_takes_the_fits_colour_not_black(renderer):
    rng = np.random.default_rng(3)
    rot = geo.axis_angle_to_matrix(rng.normal(0, 1.5, 3))
    _, image = _cube_image(renderer, rot, rng.uniform(0.3, 0.9, (6, 3)))
    model = MeshModel(MeshModelConfig(shape="raw", read_colours=True, train_colours="read",
                                      hidden=8, channels=4), 64)
    _, got = _train_render(renderer, model, np.full(geo.N_RAYS, 0.95, np.float32), image)  # overhangs
    background = image[0].amax(0).numpy() == 0
    drawn = got[0].max(-1) > 0
    assert (background & drawn).sum() > 200  # the overhang is drawn ...
    assert got[0][background & drawn].max(-1).mean() > 40  # ... and not in black: the silhouette pulls


def test_samples_are_painted_with_colours_read_only_where_they_are_rendered():
    """With colours read in training and the images shown in mirrors, a step renders each
    sample once, in the image's own frame: the colours are read once per rendered sample
    (and once per image for the decoder's fit), not also for the mirrored image's samples,
    which are not rendered."""
    from types import SimpleNamespace

    from gen3d.estimators import build
    from gen3d.image_symmetries import ImageSymmetries
    from learners.mesh_step import MeshStep, RewardSource

    torch.manual_seed(0)
    model = MeshModel(MeshModelConfig(read_colours=True, train_colours="read", hidden=8,
                                      channels=4, shape_degree=3), 32)
    x, gen = torch.rand(3, 3, 32, 32), torch.Generator().manual_seed(0)
    s = model.sample(x, 4, generator=gen, paint=False)
    torch.testing.assert_close(s.actions, model.decoder(s.m))
    painted = model.sample(x, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(painted.actions, model.train_actions(painted.m, x))
    assert not torch.allclose(painted.actions, model.decoder(painted.m))

    read, forward = [], model.reader.forward
    model.reader.forward = lambda images, lengths, *a, **kw: read.append(
        lengths[..., 0].numel()) or forward(images, lengths, *a, **kw)

    class Pool:
        def submit(self, flat, target_idx):
            return -np.abs(flat).sum(-1)

        def collect(self, ticket):
            return SimpleNamespace(rewards=ticket, wait_s=0.0)

    step = MeshStep(model, build("rloo"), RewardSource(Pool()), 1,
                    symmetries=ImageSymmetries(model.decoder, True, False))
    step(x, np.arange(3), 4, gen, 0)
    assert sum(read) == 3 * 4 + 3, read
