"""The learned projection: camera transforms, depth folding, shared weights across views."""

import pytest
import torch

from gen3d.data.views import camera, random_cameras, render_views
from gen3d.volumes.projection import (BernoulliImageLikelihood, GaussianLikelihood,
                                      LearnedProjection, ProjectionConfig)

N, S = 12, 7



def blobs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    vol = torch.zeros(n, 1, N, N, N)
    for i in range(n):
        lo = torch.randint(1, N // 2, (3,), generator=g)
        hi = lo + torch.randint(2, N // 2, (3,), generator=g)
        vol[i, 0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
        vol[i, 0, torch.randint(0, N, (4,), generator=g), torch.randint(0, N, (4,), generator=g),
            torch.randint(0, N, (4,), generator=g)] = 1
    return vol


def proj(**kw) -> LearnedProjection:
    torch.manual_seed(0)
    return LearnedProjection(ProjectionConfig(image_size=N, **kw), 1, S)


def test_identity_camera_with_max_is_the_silhouette():
    vol = blobs(3, 0)
    p = proj(layers="max")
    out = p(vol, torch.zeros(3, S), camera(torch.zeros(3), torch.zeros(3)))
    assert out.shape == (3, 1, N, N)
    assert torch.allclose(out, vol.amax(2), atol=1e-5)
    sil, _ = render_views(vol, camera(torch.zeros(3, 1), torch.zeros(3, 1)), N, 2 * N)
    assert torch.allclose(out, sil[:, 0], atol=1e-5)


def test_quarter_turn_gives_the_rotated_volumes_silhouette():
    vol = blobs(2, 1)
    p = proj(layers="max")
    out = p(vol, torch.zeros(2, S), camera(torch.full((2,), 90.0), torch.zeros(2)))
    # azimuth 90: x_cam = z, z_cam = -x, so the camera-frame volume is (d, h, w) <- (N-1-w, h, d)
    turned = vol.permute(0, 1, 4, 3, 2).flip(2)
    assert torch.allclose(out, turned.amax(2), atol=1e-5)
    sil, _ = render_views(vol, camera(torch.full((2, 1), 90.0), torch.zeros(2, 1)), N, 2 * N)
    assert torch.allclose(out, sil[:, 0], atol=1e-5)
    assert not torch.allclose(out, vol.amax(2), atol=1e-5)


def test_views_share_weights_and_use_their_own_cameras():
    torch.manual_seed(1)
    p = LearnedProjection(ProjectionConfig(image_size=N, render_prior=False), 2, S)
    canvas, state = torch.randn(2, 2, N, N, N), torch.randn(2, S)
    cams = random_cameras((2, 3), torch.Generator().manual_seed(2))
    out = p(canvas, state, cams)
    assert out.shape == (2, 3, 1, N, N)
    for v in range(3):
        assert torch.allclose(out[:, v], p(canvas, state, cams[:, v]), atol=1e-5)
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(p(canvas, state, cams[:, perm]), out[:, perm], atol=1e-5)
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-3)
    # the gradient of the sum over views is the sum of the per-view gradients
    w = p.conv2d[0].weight
    g_all = torch.autograd.grad(out.square().sum(), w)[0]
    g_sum = sum(torch.autograd.grad(p(canvas, state, cams[:, v]).square().sum(), w)[0]
                for v in range(3))
    assert torch.allclose(g_all, g_sum, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("az", [0.0, 90.0])
def test_render_prior_of_a_sharp_canvas_matches_the_data(az):
    """Channel 0 = +-20 logits of a known volume: the plain render (learned part at zero) is
    its silhouette (Bernoulli) and its first-hit depth (Gaussian) as the data makes them."""
    vol = blobs(2, 3)
    cams = camera(torch.full((2,), az), torch.zeros(2))
    sil, depth = render_views(vol, cams[:, None], N, 2 * N)
    canvas = (vol * 2 - 1) * 20
    for render in ("alpha", "max"):
        pb = proj(likelihood="bernoulli", occupancy_bias=0.0, render=render)
        assert torch.allclose(torch.sigmoid(pb(canvas, torch.zeros(2, S), cams)), sil[:, 0],
                              atol=1e-4)
    pg = proj(likelihood="gaussian", occupancy_bias=0.0)
    # the operator samples N depths, the data 2N: first hits differ by a quarter voxel
    err = (pg(canvas, torch.zeros(2, S), cams) - depth[:, 0]).abs()
    assert err.max() <= 0.25 / N + 1e-4


def test_learned_camera_and_object_frame():
    """A pose read from s_T that equals the known camera renders the same image, and the
    object frame undoes it: the canvas comes back where the data's volume is."""
    vol = blobs(1, 4)
    cam = camera(torch.tensor([90.0]), torch.tensor([0.0]))
    known = proj(layers="max")
    learned = proj(layers="max", camera="learned")
    with torch.no_grad():  # s_T = e_0 -> axis-angle (0, pi/2, 0) = the azimuth-90 rotation
        learned.pose.weight.zero_()
        learned.pose.weight[1, 0] = torch.pi / 2
    state = torch.zeros(1, S)
    state[0, 0] = 1
    img = learned(vol, state, None)
    assert torch.allclose(img, known(vol, state, cam), atol=1e-4)
    # the learned camera put the canvas in the camera frame; undoing the known one returns it
    assert torch.allclose(learned.object_frame(vol, state, cam), vol, atol=1e-4)
    # with "both", the object frame applies the learned pose alone
    both = proj(layers="max", camera="both")
    with torch.no_grad():
        both.pose.weight.copy_(learned.pose.weight)
    obj = both.object_frame(vol, state)
    turned = vol.permute(0, 1, 4, 3, 2).flip(2)
    assert torch.allclose(obj, turned, atol=1e-4)


def test_max_render_needs_one_confident_voxel():
    """Alpha compositing lights a ray through fog (ten voxels at p = 0.3); the max does not."""
    occ = torch.full((1, N, 1, 1), 1e-4)
    occ[0, :10] = 0.3
    alpha = proj(likelihood="bernoulli", render="alpha").render(occ)
    peak = proj(likelihood="bernoulli", render="max").render(occ)
    assert torch.allclose(torch.sigmoid(alpha), 1 - torch.tensor(0.7) ** 10 * (1 - 1e-4) ** 2,
                          atol=1e-4)
    assert torch.allclose(torch.sigmoid(peak), torch.tensor(0.3), atol=1e-5)


def test_render_prior_gradients():
    p = proj(likelihood="gaussian").double()
    occ = torch.rand(2, 4, 3, 3, dtype=torch.float64).mul(0.98).add(0.01).requires_grad_()
    assert torch.autograd.gradcheck(p.render, (occ,))
    p = proj(likelihood="bernoulli").double()
    assert torch.autograd.gradcheck(p.render, (occ,))


def test_likelihoods():
    x = torch.rand(3, 2, 1, 4, 4)
    mu = torch.rand(3, 2, 1, 4, 4)
    g = GaussianLikelihood(0.3, 0.01)
    want = torch.distributions.Normal(mu, 0.3).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(g.log_prob(mu, x), want, atol=1e-4)
    b = BernoulliImageLikelihood()
    xb = (x > 0.5).float()
    want = torch.distributions.Bernoulli(logits=mu).log_prob(xb).flatten(1).sum(1)
    assert torch.allclose(b.log_prob(mu, xb), want, atol=1e-5)
    with pytest.raises(ValueError, match="binary"):
        b.log_prob(mu, x)


def test_bad_input_is_named():
    p = proj()
    with pytest.raises(ValueError, match="canvas"):
        p(torch.zeros(1, 3, N, N, N), torch.zeros(1, S), camera(torch.zeros(1), torch.zeros(1)))
    with pytest.raises(ValueError, match="camera"):
        p(torch.zeros(1, 1, N, N, N), torch.zeros(1, S), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="needs the data's cameras"):
        p(torch.zeros(1, 1, N, N, N), torch.zeros(1, S), None)
    with pytest.raises(ValueError, match="extent"):
        ProjectionConfig(extent=0)
