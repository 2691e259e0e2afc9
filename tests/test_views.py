"""Images of volumes from known cameras: checked against volumes whose 3D we know exactly."""

import math

import pytest
import torch
import torch.nn.functional as F

from gen3d.data.views import (MultiViewData, camera, project_points, random_cameras,
                              render_views, unproject)

N = 16



def random_boxes(n: int, size: int, seed: int) -> torch.Tensor:
    """Unions of 1-3 random axis-aligned boxes: binary volumes (n, 1, size, size, size)."""
    g = torch.Generator().manual_seed(seed)
    vol = torch.zeros(n, 1, size, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            lo = torch.randint(2, size // 2, (3,), generator=g)
            hi = lo + torch.randint(2, size // 2 - 1, (3,), generator=g)
            vol[i, 0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    return vol


def test_identity_camera_is_max_over_depth_and_first_hit():
    vol = random_boxes(3, N, 0)
    sil, depth = render_views(vol, camera(torch.zeros(3, 1), torch.zeros(3, 1)), N, 2 * N)
    assert torch.equal(sil[:, 0], vol.amax(2))
    # first occupied slice d along D: sample 2d lies at its centre -> depth (2d + 0.5) / (2N)
    occ = vol[:, 0] > 0
    first = torch.argmax(occ.to(torch.uint8), 1).float()
    want = torch.where(occ.any(1), (2 * first + 0.5) / (2 * N), torch.ones_like(first))
    assert torch.allclose(depth[:, 0, 0], want)


def test_quarter_turn_sees_the_rotated_volume():
    vol = random_boxes(2, N, 1)
    sil, _ = render_views(vol, camera(torch.full((2, 1), 90.0), torch.zeros(2, 1)), N, 2 * N)
    # azimuth 90: camera x = world z (D), camera y = world y (H): image[h, d] = any over W
    assert torch.equal(sil[:, 0, 0], vol[:, 0].amax(-1).transpose(-1, -2))
    sil, _ = render_views(vol, camera(torch.zeros(2, 1), torch.full((2, 1), 90.0)), N, 2 * N)
    assert sil.sum() > 0 and not torch.equal(sil[:, 0, 0], vol[:, 0].amax(1))


def test_block_projects_where_its_camera_says():
    """A 3^3 block seen from random cameras: the pixel nearest its projected centre is on and
    its depth is the block's depth to within the block's half-diagonal."""
    g = torch.Generator().manual_seed(2)
    for trial in range(6):
        c = torch.randint(4, N - 4, (3,), generator=g)
        vol = torch.zeros(1, 1, N, N, N)
        vol[0, 0, c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = 1
        cams = random_cameras((1, 5), g)
        sil, depth = render_views(vol, cams, N, 2 * N)
        centre = (c.flip(0).float() + 0.5) / N * 2 - 1          # (x, y, z) from (d, h, w)
        pix, dep = project_points(centre.expand(1, 5, 3), cams, N)
        rc = pix.round().long()
        inside = ((rc >= 0) & (rc < N)).all(-1)
        assert inside.all()
        on = sil[0, torch.arange(5), 0, rc[0, :, 0], rc[0, :, 1]]
        assert on.bool().all(), f"trial {trial}: block not seen where projected"
        d = depth[0, torch.arange(5), 0, rc[0, :, 0], rc[0, :, 1]]
        assert ((d - dep[0]).abs() <= math.sqrt(3) * 3 / N / 2 + 0.5 / (2 * N) + 1e-5).all()


def _agreement(vol, sil, depth, cams, cams_b) -> float:
    """Fraction of A's back-projected surface points that B (seen through ``cams_b``) shows at
    or in front of them, within one pixel (a surface point can sit half a pixel off a ray)."""
    sil_b = F.max_pool2d(sil[:, 1], 3, 1, 1)
    depth_b = -F.max_pool2d(-depth[:, 1], 3, 1, 1)
    agree, total = 0, 0
    for i in range(len(vol)):
        rows, cols = torch.nonzero(sil[i, 0, 0], as_tuple=True)
        pts = unproject(torch.stack([rows, cols], -1).float(), depth[i, 0, 0, rows, cols],
                        cams[i, 0].expand(len(rows), 3, 4), N)
        idx = ((pts + 1) / 2 * N).floor().long().clamp(0, N - 1)  # (x, y, z) -> (w, h, d)
        assert vol[i, 0, idx[:, 2], idx[:, 1], idx[:, 0]].mean() > 0.95
        pix, dep_b = project_points(pts, cams_b[i].expand(len(pts), 3, 4), N)
        rc = pix.round().long()
        ok = ((rc >= 0) & (rc < N)).all(-1)
        rc, dep_b = rc[ok], dep_b[ok]
        seen = sil_b[i, 0, rc[:, 0], rc[:, 1]].bool()
        front = depth_b[i, 0, rc[:, 0], rc[:, 1]] <= dep_b + 1.0 / N
        agree += int((seen & front).sum())
        total += len(rc)
    assert total > 200
    return agree / total


def test_surface_seen_in_one_view_is_consistent_with_another():
    """Back-project every foreground pixel of view A with its depth: the 3D point lies in an
    occupied voxel, and view B sees something at or in front of it where it projects; with B's
    camera replaced by another, that agreement falls."""
    vol = random_boxes(8, N, 3)
    g = torch.Generator().manual_seed(4)
    cams = random_cameras((8, 2), g)
    sil, depth = render_views(vol, cams, N, 4 * N)
    assert _agreement(vol, sil, depth, cams, cams[:, 1]) > 0.99
    wrong = random_cameras((8,), g)
    assert _agreement(vol, sil, depth, cams, wrong) < 0.9


def test_unproject_inverts_project():
    g = torch.Generator().manual_seed(5)
    cams = random_cameras((7,), g)
    pts = torch.rand(7, 3, generator=g) * 1.6 - 0.8
    pix, dep = project_points(pts, cams, 24, extent=1.3)
    assert torch.allclose(unproject(pix, dep, cams, 24, extent=1.3), pts, atol=1e-5)


def test_multiview_data_fixed_context_random_targets():
    vol = random_boxes(5, N, 6)
    data = MultiViewData(vol, [(0, 20), (120, 20), (240, 20)], n_targets=4, image="silhouette",
                         image_size=N, depth_samples=2 * N)
    g = torch.Generator().manual_seed(0)
    a, b = data.batch(torch.tensor([0, 3]), g), data.batch(torch.tensor([0, 3]), g)
    assert a.context.shape == (2, 3, 1, N, N) and a.target.shape == (2, 4, 1, N, N)
    assert torch.equal(a.context, b.context) and torch.equal(a.context_cameras, b.context_cameras)
    assert not torch.equal(a.target_cameras, b.target_cameras)
    # every image is the render of its own camera
    sil, _ = render_views(a.volumes, a.target_cameras, N, 2 * N)
    assert torch.equal(sil, a.target)
    sil, _ = render_views(a.volumes, a.context_cameras, N, 2 * N)
    assert torch.equal(sil, a.context)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="binary"):
        MultiViewData(torch.rand(2, N, N, N), [], 1)
    with pytest.raises(ValueError, match="image"):
        MultiViewData(torch.zeros(2, N, N, N), [], 1, image="rgb")
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 4\)"):
        render_views(torch.zeros(1, N, N, N), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="max_elevation"):
        random_cameras((2,), max_elevation=95)
