"""The volumetric spatial transformer against exact truths: identity, known translations and
rotations, the grid_sample reference, Rodrigues' formula, and float64 gradchecks."""

import numpy as np
import pytest
import torch

from gen3d.geometry import axis_angle_to_matrix
from gen3d.volumes import vst



def ones(b, v=1.0):
    return torch.full((b, 3), v, dtype=torch.float64)


def test_identity_write_and_read_return_input():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 7, 7, dtype=torch.float64)
    zero = torch.zeros(2, 3, dtype=torch.float64)
    eye = vst.rotation_matrix(zero)
    assert torch.allclose(eye, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    for out in (vst.write(x, ones(2), zero, 7), vst.write(x, ones(2), zero, 7, eye),
                vst.read(x, ones(2), zero, 7), vst.write_dense(x, ones(2), zero, 7),
                vst.read_dense(x, ones(2), zero, 7)):
        assert torch.allclose(out, x, atol=1e-12)


@pytest.mark.parametrize("dx,dy,dz", [(2, 0, 0), (0, -3, 1), (1, 2, -2)])
def test_known_translation_moves_a_voxel(dx, dy, dz):
    n = 8
    patch = torch.zeros(1, 1, n, n, n, dtype=torch.float64)
    x0, y0, z0 = 3, 4, 5
    patch[0, 0, z0, y0, x0] = 1.0
    shift = torch.tensor([[dx, dy, dz]], dtype=torch.float64) * 2 / n  # voxels -> normalised
    for write in (vst.write, vst.write_dense):
        out = write(patch, ones(1), shift, n)
        want = torch.zeros_like(out)
        want[0, 0, z0 + dz, y0 + dy, x0 + dx] = 1.0
        assert torch.allclose(out, want, atol=1e-12)
    # reading at the same shift brings it back
    back = vst.read(vst.write(patch, ones(1), shift, n), ones(1), shift, n)
    assert torch.allclose(back, patch, atol=1e-12)


def test_scaled_write_places_patch_in_its_box():
    # a patch of ones written at scale 0.5 centred at +0.5 fills x, y, z in (0, 1): the upper
    # octant of a 16^3 canvas (voxels 8..15); trilinear weights fade over half a patch voxel
    # (one canvas voxel) at the box border, with zeros beyond
    patch = torch.ones(1, 1, 4, 4, 4, dtype=torch.float64)
    out = vst.write(patch, ones(1, 0.5), ones(1, 0.5), 16)[0, 0]
    assert torch.allclose(out[9:15, 9:15, 9:15], torch.ones(6, 6, 6, dtype=torch.float64))
    assert out[7, 10, 10] == pytest.approx(0.25) and out[8, 10, 10] == pytest.approx(0.75)
    assert out[:7].abs().max() == 0 and out[:, :7].abs().max() == 0 and out[..., :7].abs().max() == 0


def test_separable_write_and_read_match_grid_sample():
    torch.manual_seed(1)
    b = 4
    patch = torch.randn(b, 2, 5, 5, 5, dtype=torch.float64)
    vol = torch.randn(b, 2, 11, 11, 11, dtype=torch.float64)
    scale = torch.rand(b, 3, dtype=torch.float64) + 0.2
    shift = torch.randn(b, 3, dtype=torch.float64) * 0.4
    assert torch.allclose(vst.write(patch, scale, shift, 11),
                          vst.write_dense(patch, scale, shift, 11), atol=1e-12)
    assert torch.allclose(vst.read(vol, scale, shift, 5),
                          vst.read_dense(vol, scale, shift, 5), atol=1e-12)
    # quarter turns permute the patch's voxels, so the two-stage write is exact too
    w = torch.tensor([[0, 0, np.pi / 2], [np.pi / 2, 0, 0], [0, -np.pi / 2, 0], [0, 0, np.pi]],
                     dtype=torch.float64)
    rot = vst.rotation_matrix(w)
    assert torch.allclose(vst.write(patch, scale, shift, 11, rot),
                          vst.write_dense(patch, scale, shift, 11, rot), atol=1e-9)


def test_quarter_turn_about_z_maps_x_to_y():
    n = 7  # odd: voxel 3 is the centre
    patch = torch.zeros(1, 1, n, n, n, dtype=torch.float64)
    patch[0, 0, 3, 3, 5] = 1.0  # at x = +2 voxels from the centre
    rot = vst.rotation_matrix(torch.tensor([[0, 0, np.pi / 2]], dtype=torch.float64))
    out = vst.write(patch, ones(1), torch.zeros(1, 3, dtype=torch.float64), n, rot)
    assert out[0, 0, 3, 5, 3] == pytest.approx(1.0)  # now at y = +2
    assert out.sum() == pytest.approx(1.0)


def test_rotation_matrix_is_rodrigues():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 3)) * 2
    w[0] = 0
    w[1] = 1e-9
    got = vst.rotation_matrix(torch.from_numpy(w)).numpy()
    assert np.allclose(got, axis_angle_to_matrix(w), atol=1e-12)


def test_antialiased_read_preserves_constants():
    vol = torch.full((2, 1, 16, 16, 16), 0.7, dtype=torch.float64)
    shift = torch.zeros(2, 3, dtype=torch.float64)
    # a 4^3 glimpse of the middle half: weights sum to one, so the constant survives
    g = vst.read(vol, ones(2, 0.5), shift, 4, antialias=True)
    assert torch.allclose(g, torch.full_like(g, 0.7), atol=1e-12)
    # one thin plane is seen by every glimpse row when anti-aliased, by few without
    vol = torch.zeros(1, 1, 16, 16, 16, dtype=torch.float64)
    vol[0, 0, :, :, 3] = 1.0  # between the plain glimpse's samples at x = 1.5 and 5.5
    plain = vst.read(vol, ones(1), torch.zeros(1, 3, dtype=torch.float64), 4)
    smooth = vst.read(vol, ones(1), torch.zeros(1, 3, dtype=torch.float64), 4, antialias=True)
    assert plain.sum() == 0 and smooth.sum() > 0
    # along x each glimpse voxel's tent (width 4, area 1/4 after normalising) holds the plane
    # once; along y and z the two border rows lose 1/8 of their tent outside the volume
    assert smooth.sum() == pytest.approx(16 * 0.25 * (15 / 16) ** 2, rel=1e-9)


def test_gradcheck_write_read_float64():
    torch.manual_seed(2)
    b, p, n = 2, 3, 5
    patch = torch.randn(b, 2, p, p, p, dtype=torch.float64, requires_grad=True)
    vol = torch.randn(b, 2, n, n, n, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(b, 3, dtype=torch.float64) + 0.4).requires_grad_()
    shift = (torch.randn(b, 3, dtype=torch.float64) * 0.2).requires_grad_()
    w = (torch.randn(b, 3, dtype=torch.float64) * 0.5).requires_grad_()

    def write(pa, s, t, ww):
        return vst.write(pa, s, t, n, vst.rotation_matrix(ww))

    assert torch.autograd.gradcheck(write, (patch, scale, shift, w))
    assert torch.autograd.gradcheck(lambda v, s, t: vst.read(v, s, t, p), (vol, scale, shift))
    assert torch.autograd.gradcheck(lambda v, s, t: vst.read(v, s, t, p, antialias=True),
                                    (vol, scale, shift))
    raw = torch.randn(b, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: vst.transform_from_raw(r)[2], (raw,))


def test_bad_shapes_are_named():
    x = torch.zeros(2, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="scale must be"):
        vst.write(x, torch.ones(3, 3), torch.zeros(2, 3), 8)
    with pytest.raises(ValueError, match="cubic"):
        vst.read(torch.zeros(2, 1, 4, 5, 4), torch.ones(2, 3), torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="9 numbers"):
        vst.transform_from_raw(torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"\(B, 9\).*raw\[None\]"):
        vst.transform_from_raw(torch.zeros(9))
    for fn in (vst.write, vst.write_dense):
        with pytest.raises(ValueError, match=r"rotation must be \(2, 3, 3\)"):
            fn(x, torch.ones(2, 3), torch.zeros(2, 3), 8, rotation=torch.eye(3))
