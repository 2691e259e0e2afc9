"""Colours read from the image (``gen3d.image_colours``) against renders of meshes whose
colours, shape and pose are known, and the model's use of them (q(c | x, m), its KL)."""

import dataclasses

import numpy as np
import pytest
import torch

from gen3d import geometry as geo
from gen3d.image_colours import ImageColours
from gen3d.mesh_model import MeshModel, MeshModelConfig, images_to_tensor
from learners.mesh_eval import psnr

RAYS = geo.ico_rays()


def _scenes(n: int, seed: int = 0):
    """n smooth ray meshes, posed, with smooth per-vertex colours (a known function of each
    vertex's ray), as renderer arguments."""
    rng = np.random.default_rng(seed)
    y = geo.real_sph_harm(RAYS, 2)
    lengths = np.clip(0.7 * np.exp(rng.normal(0, 0.12, (n, 9)) @ y.T), 0.3, 1.2).astype(np.float32)
    rot = (rng.normal(0, 1, (n, 3))).astype(np.float32)
    trans = rng.uniform(-0.25, 0.25, (n, 3)).astype(np.float32)
    base = rng.uniform(0.25, 0.75, (n, 1, 3))
    colours = np.clip(base + 0.2 * RAYS[None, :, :] @ rng.normal(0, 1, (n, 3, 3)), 0.05, 0.95)
    return lengths, rot, trans, colours.astype(np.float32)


def _read(lengths, rot, trans, images):
    reader = ImageColours(images.shape[1])
    return reader(images_to_tensor(images), *(torch.from_numpy(a) for a in (lengths, rot, trans)))


def test_projection_matches_the_cameras():
    pts = np.random.default_rng(1).uniform(-1, 1, (5, 7, 3)).astype(np.float32)
    want, _ = geo.Camera().project(pts, 48, 48)
    np.testing.assert_allclose(ImageColours(48).pixels(torch.from_numpy(pts)).numpy(), want, atol=1e-4)


def test_a_centred_sphere_is_seen_exactly_on_the_cap_facing_the_camera(renderer):
    """Camera at (0, 0, 4): a vertex r * d of a centred sphere faces it iff d_z > r / 4."""
    r = 0.8
    lengths = np.full((1, geo.N_RAYS), r, np.float32)
    img = renderer.render_rays(lengths).rgb
    _, seen = _read(lengths, np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32), img)
    truth = RAYS[:, 2] > r / 4
    margin = np.abs(RAYS[:, 2] - r / 4) > 0.05  # the mesh's own facets tilt the normals a little
    assert (seen[0].numpy() == truth)[margin].all()


def test_the_albedo_read_back_is_the_colour_the_image_was_drawn_with(renderer):
    lengths, rot, trans, colours = _scenes(16)
    img = renderer.render_rays(lengths, rot, trans, colours).rgb
    albedo, seen = _read(lengths, rot, trans, img)
    reader = ImageColours(64)
    verts = reader.vertices(*(torch.from_numpy(a) for a in (lengths, rot, trans)))
    normals = reader.normals(verts)
    view = torch.as_tensor(geo.Camera().eye, dtype=torch.float32) - verts
    facing = ((view / view.norm(dim=-1, keepdim=True)) * normals).sum(-1)
    front = (facing > 0.5).numpy()  # away from the silhouette's grazing edge
    err = np.abs(albedo.numpy() - colours)[front]
    assert seen.numpy()[front].all()
    assert np.median(err) < 0.03 and np.percentile(err, 90) < 0.08, (np.median(err), np.percentile(err, 90))


def test_drawn_again_with_the_colours_read_the_image_comes_back(renderer):
    """The whole loop on known 3D: grey meshes of the true shape and pose score ~12 dB; with
    the seen vertices' colours read from the image they reproduce it."""
    lengths, rot, trans, colours = _scenes(16, seed=3)
    img = renderer.render_rays(lengths, rot, trans, colours).rgb
    albedo, seen = _read(lengths, rot, trans, img)
    grey = np.full_like(colours, 0.5)
    read = np.where(seen.numpy()[..., None], albedo.numpy(), grey)
    before = psnr(renderer.render_rays(lengths, rot, trans, grey).rgb, img).mean()
    after = psnr(renderer.render_rays(lengths, rot, trans, read).rgb, img).mean()
    assert after > 30 and after > before + 12, (before, after)


def _model(read: bool) -> MeshModel:
    torch.manual_seed(0)
    cfg = MeshModelConfig(hidden=16, channels=4, read_colours=read, init_std=0.05)
    return MeshModel(cfg, 64)


def test_samples_render_as_decoded_and_the_fit_to_the_colours_read_trains_the_head_only():
    images = torch.rand(2, 3, 64, 64)
    plain, model = _model(False), _model(True)
    model.load_state_dict(plain.state_dict())
    with torch.no_grad():  # a non-zero write head: a mesh other than the base sphere
        for m in (plain, model):
            m.write.bias.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    a = plain.sample(images, 3, generator=torch.Generator().manual_seed(2))
    b = model.sample(images, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.actions, b.actions) and torch.equal(a.kl, b.kl) and a.colour_fit is None
    sl = geo.ACTION_SLICES
    first = b.actions[:, 0]  # the fit reads each image's first sample
    albedo, seen = model.reader(images, *(first[:, sl[k]] for k in ("lengths", "rotation", "translation")))
    decoded = model.decoder(b.mean[:, 0])[:, sl["colours"]].reshape(2, geo.N_RAYS, 3)
    want = (((albedo - decoded) ** 2).sum(-1) * seen).sum(-1) / (2 * 0.1**2)
    torch.testing.assert_close(b.colour_fit, want)
    assert 0 < seen.sum() < seen.numel()
    b.colour_fit.sum().backward()
    head = model.write.weight.grad.abs().max()
    assert head > 0
    for mod in (model.encoder, model.lstm, model.q):
        assert all(p.grad is None or p.grad.abs().max() == 0 for p in mod.parameters())


def test_infer_reads_colours_and_generation_does_not():
    images = torch.rand(3, 3, 64, 64)
    plain, read = _model(False), _model(True)
    read.load_state_dict(plain.state_dict())
    a, b = plain.infer(images), read.infer(images)
    sl = geo.ACTION_SLICES["colours"]
    assert torch.equal(a[:, :sl.start], b[:, :sl.start]) and not torch.equal(a[:, sl], b[:, sl])
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(plain.generate(2, generator=g),
                               read.generate(2, generator=torch.Generator().manual_seed(0)))


def test_a_wrong_image_size_is_refused_naming_both_sizes():
    with pytest.raises(ValueError, match="expected 64x64, got \\(32, 32\\)"):
        ImageColours(64)(torch.rand(1, 3, 32, 32), torch.ones(1, geo.N_RAYS), torch.zeros(1, 3),
                         torch.zeros(1, 3))


def test_the_config_option_is_part_of_the_model_config():
    cfg = dataclasses.replace(MeshModelConfig(), read_colours=True)
    assert MeshModel(cfg, 64).reader is not None and MeshModel(MeshModelConfig(), 64).reader is None
