"""The depth scale (``gen3d.depth_scale``, ``train.self_imitation_search_depth``): a mesh's
parameters mapped to those of the mesh stretched along the camera's axis, against the stretched
mesh cast on the rays and the analytic ellipsoid; and the bests' search rendering both jumps."""

import numpy as np
import pytest
import torch

from gen3d import geometry as geo
from gen3d.depth_scale import depth_scale
from gen3d.mesh_model import MeshDecoder, MeshModelConfig


def _decoder(**kw):
    return MeshDecoder(MeshModelConfig(colour="sh", shape_degree=6, **kw))


def test_a_ball_stretched_is_the_ellipsoid_and_nothing_else_moves():
    dec = _decoder()
    rays = geo.ico_rays()
    m = torch.zeros(1, dec.dim)
    m[0, dec.slices["translation"]] = torch.tensor([0.1, -0.2, 0.3])
    m[0, dec.slices["colour"]] = torch.linspace(-1, 1, dec.slices["colour"].stop - dec.slices["colour"].start)
    for f in (0.6, 1.5):
        a, b = depth_scale(dec, f)
        out = dec(m @ a.T + b)[0].numpy()
        lengths = out[:geo.N_RAYS]
        r = dec.cfg.base_radius / np.sqrt(rays[:, 0] ** 2 + rays[:, 1] ** 2 + (rays[:, 2] / f) ** 2)
        np.testing.assert_allclose(lengths, r, rtol=3e-3)
        np.testing.assert_allclose(out[geo.N_RAYS:], dec(m)[0, geo.N_RAYS:].numpy(), atol=1e-6)


def test_a_shape_stretched_is_its_ray_mesh_stretched_and_cast_on_the_rays():
    dec = _decoder()
    torch.manual_seed(0)
    m = torch.zeros(4, dec.dim)
    m[:, dec.slices["shape"]] = 0.05 * torch.randn(4, 49)
    lengths = dec.lengths(m).numpy()
    for f in (0.75, 1.0, 1.33):
        a, b = depth_scale(dec, f)
        got = dec.lengths(m @ a.T + b).numpy()
        cast = np.stack([geo.ray_lengths_of_mesh(geo.ray_mesh(v) * np.array([1, 1, f]), geo.ico_faces())
                         for v in lengths])
        err = np.abs(np.log(got / cast))
        # the facets between vertices and the harmonics between rays interpolate differently
        assert np.median(err) < 0.02 and err.max() < 0.1, (f, np.median(err), err.max())
    a, b = depth_scale(dec, 1.0)
    torch.testing.assert_close(m @ a.T + b, m, atol=1e-5, rtol=0)


def test_a_stretch_undone_by_the_squash_is_nearly_where_it_started():
    dec = _decoder()
    (a, b), (a2, b2) = depth_scale(dec, 1.2), depth_scale(dec, 1 / 1.2)
    m = torch.zeros(2, dec.dim)
    m[:, dec.slices["shape"]] = 0.05 * torch.randn(2, 49, generator=torch.Generator().manual_seed(1))
    back = (m @ a.T + b) @ a2.T + b2
    np.testing.assert_allclose(dec.lengths(back).numpy(), dec.lengths(m).numpy(), rtol=0.02)


def test_the_depth_scale_refuses_what_it_cannot_map():
    with pytest.raises(ValueError, match="rotation: false"):
        depth_scale(_decoder(rotation=True), 1.2)
    with pytest.raises(ValueError, match="model.shape: sh"):
        depth_scale(MeshDecoder(MeshModelConfig(shape="raw", colour="uniform")), 1.2)
    with pytest.raises(ValueError, match="factor must be > 0"):
        depth_scale(_decoder(), 0.0)


def test_the_bests_search_renders_both_jumps_and_the_config_counts_them():
    from learners.config import from_dict
    from learners.mesh_config import MeshTrainConfig
    from learners.mesh_train import MeshRunConfig
    from learners.self_imitation import SelfImitation

    dec = _decoder()
    jumps = [depth_scale(dec, 1.25), depth_scale(dec, 0.8)]
    replay = SelfImitation(3, dec.dim, "cpu", search=2, search_std=0.01, jumps=jumps)
    replay.m[1, dec.slices["shape"]] = 0.1
    out = replay.proposals(np.array([1]), torch.Generator().manual_seed(0))
    assert out.shape == (1, 4, dec.dim)
    for j, (a, b) in enumerate(jumps):
        torch.testing.assert_close(out[0, 2 + j], replay.m[1] @ a.T + b)
    assert SelfImitation(3, dec.dim, "cpu", jumps=jumps).searches
    base = MeshTrainConfig(self_imitation=0.25, self_imitation_search=8, batch=4, samples=4)
    deep = MeshTrainConfig(self_imitation=0.25, self_imitation_search=8, batch=4, samples=4,
                           self_imitation_search_depth=1.2)
    assert deep.renders_per_step == base.renders_per_step + 2 * 4
    with pytest.raises(ValueError, match="by a factor above 1"):
        MeshTrainConfig(self_imitation=0.25, self_imitation_search_depth=0.8)
    with pytest.raises(ValueError, match="self_imitation_search_depth: .*rotation: false"):
        from_dict(MeshRunConfig, {"model": {"rotation": True},
                                  "train": {"self_imitation": 0.25, "self_imitation_search_depth": 1.2}})
