"""The sequential volume model: its bounds, learning, class conditioning, completion, views
and the errors it gives for bad input. Tiny models on generated volumes, CPU only."""

import math

import numpy as np
import pytest
import torch

from gen3d.data.vol_procedural import primitives
from gen3d.volumes import bounds, completion
from gen3d.volumes.contexts import render_views
from gen3d.volumes.model import VolumeModel, VolumeModelConfig



def tiny(**kw) -> VolumeModelConfig:
    base = dict(steps=3, z_dim=4, hidden=48, enc_hidden=48, canvas_size=12, write_patch=4,
                read_patch=4, canvas_bias=-2.0)
    base.update(kw)
    return VolumeModelConfig(**base)


def prim(n: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    v, _ = primitives(n, seed, size=size, extent=8)
    return torch.from_numpy(v).float()[:, None]


def test_forward_shapes_and_bound_identity():
    torch.manual_seed(0)
    m = VolumeModel(tiny())
    x = prim(5)
    out = m(x)
    for t in (out.elbo, out.log_lik, out.kl, out.log_w):
        assert t.shape == (5,) and torch.isfinite(t).all()
    assert torch.allclose(out.elbo, out.log_lik - out.kl)
    assert (out.kl >= 0).all()
    assert out.params.shape == x.shape and out.canvas.shape == (5, 1, 12, 12, 12)
    g = m.generate(3)
    assert g.mean.shape == (3, 1, 12, 12, 12) and ((g.mean >= 0) & (g.mean <= 1)).all()


def test_sampled_weights_agree_with_analytic_kl():
    # E_q[log p(z) - log q(z|x)] = -KL, so mean log_w over many draws equals the mean ELBO
    torch.manual_seed(1)
    m = VolumeModel(tiny())
    x = prim(4).repeat(200, 1, 1, 1, 1)
    with torch.no_grad():
        out = m(x)
    diff = out.log_w - out.elbo
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff))


def test_iwae_bound_is_at_least_the_elbo_on_average():
    torch.manual_seed(2)
    m = VolumeModel(tiny())
    x = prim(16)
    el = bounds.elbo(m, x, n_samples=20)
    iw = bounds.iwae_bound(m, x, k=20, max_batch=160)
    assert iw.shape == (16,)
    assert float(iw.mean()) > float(el.mean())
    # k = 1 is the ELBO's sampled form: same mean within noise
    iw1 = torch.stack([bounds.iwae_bound(m, x, k=1) for _ in range(20)]).mean(0)
    assert abs(float(iw1.mean() - el.mean())) < 0.05 * abs(float(el.mean()))


def test_separable_and_dense_writes_give_the_same_model():
    torch.manual_seed(3)
    a = VolumeModel(tiny(rotate=False))
    b = VolumeModel(tiny(rotate=False, write_mode="dense"))
    b.load_state_dict(a.state_dict())
    x = prim(4)
    torch.manual_seed(7)
    ea = a(x).elbo
    torch.manual_seed(7)
    eb = b(x).elbo
    assert torch.allclose(ea, eb, rtol=1e-4, atol=1e-3)


def test_bound_of_tiny_model_falls_within_a_few_hundred_steps():
    # 8 primitives at 12^3 (about 80-300 occupied voxels each): the negative ELBO starts near
    # 550 nats (the empty canvas' cost) and must fall below 40% of that in 300 Adam steps
    torch.manual_seed(4)
    m = VolumeModel(tiny(hidden=64, enc_hidden=64))
    x = prim(8)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    before = -float(bounds.elbo(m, x, n_samples=5).mean())
    for _ in range(300):
        loss = m.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = -float(bounds.elbo(m, x, n_samples=5).mean())
    assert before > 400
    assert after < 0.4 * before, (before, after)


def blobs(n_per: int, size: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 4^3 cubes, each in its own corner of the volume, jittered by a voxel."""
    rng = np.random.default_rng(seed)
    corners = [(1, 1, 1), (5, 1, 5), (3, 5, 1)]
    vols, labels = [], []
    for k, (z, y, x) in enumerate(corners):
        for _ in range(n_per):
            v = np.zeros((size,) * 3, np.float32)
            dz, dy, dx = rng.integers(-1, 2, 3)
            v[z + dz:z + dz + 4, y + dy:y + dy + 4, x + dx:x + dx + 4] = 1
            vols.append(v)
            labels.append(k)
    return torch.from_numpy(np.stack(vols))[:, None], torch.tensor(labels)


def test_class_conditional_samples_are_recognised_by_nearest_mean():
    torch.manual_seed(5)
    x, y = blobs(8)
    m = VolumeModel(tiny(canvas_size=10, context="class", n_classes=3, hidden=64, enc_hidden=64))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(250):
        loss = m.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    means = torch.stack([x[y == k].flatten(1).mean(0) for k in range(3)])
    labels = torch.arange(60) % 3
    samples = (m.generate(60, labels).mean > 0.5).float().flatten(1)
    pred = torch.cdist(samples, means).argmin(1)
    acc = float((pred == labels).float().mean())
    assert acc > 1 / 3 + 0.25, acc


def test_completion_never_changes_observed_voxels():
    torch.manual_seed(6)
    m = VolumeModel(tiny(canvas_bias=0.0))  # p = 1/2 everywhere: the chain must move
    x = prim(4)
    observed = completion.left_half_mask(x)
    assert not observed[..., :6].any() and observed[..., 6:].all()
    res = completion.complete(m, x, observed, steps=6, seed=0)
    assert torch.equal(res.volume[observed], x[observed])
    assert torch.equal(res.probs[observed], x[observed])
    assert res.volume[~observed].sum() > 0  # missing voxels were sampled
    assert ((res.volume == 0) | (res.volume == 1)).all()
    truth = torch.zeros(2, 1, 4, 4, 4)
    truth[:, :, :2] = 1
    assert torch.allclose(completion.iou(truth, truth), torch.ones(2))
    half = truth.clone()
    half[:, :, 1] = 0
    assert torch.allclose(completion.iou(half, truth), torch.full((2,), 0.5))


def test_view_context_trains_and_views_are_right():
    # a centred ball of radius r (normalised) is a disc of radius r / (0.6 sqrt 3) in a view
    n = 16
    g = (torch.arange(n) * 2 + 1) / n - 1
    zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")
    ball = ((xx**2 + yy**2 + zz**2) <= 0.5**2).float()[None]
    views = render_views(torch.stack([ball[0], torch.zeros(n, n, n)]), 3)
    assert views.shape == (2, 3, n, n) and views[1].abs().max() == 0
    disc = math.pi * (0.5 / (0.6 * math.sqrt(3))) ** 2 / 4 * n * n
    for k in range(3):
        assert (views[0, k] > 0).sum().item() == pytest.approx(disc, rel=0.2)
    torch.manual_seed(8)
    m = VolumeModel(tiny(canvas_size=n, context="views", n_views=2, context_dim=16))
    x = prim(3, size=n)
    out = m(x, render_views(x, 2))
    out.elbo.mean().backward()
    assert m.context.encoder[0].weight.grad.abs().sum() > 0


def test_bad_input_is_named():
    m = VolumeModel(tiny())
    with pytest.raises(ValueError, match="model input"):
        m(torch.zeros(2, 12, 12, 12))
    with pytest.raises(ValueError, match="binary"):
        m(torch.full((2, 1, 12, 12, 12), 0.5))
    with pytest.raises(ValueError, match="no context"):
        m(prim(2), torch.zeros(2, dtype=torch.long))
    mc = VolumeModel(tiny(context="class", n_classes=3))
    with pytest.raises(ValueError, match="needs c"):
        mc(prim(2))
    with pytest.raises(ValueError, match="one-hot"):
        mc(prim(2), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="n_classes"):
        VolumeModelConfig(context="class")
    with pytest.raises(ValueError, match="steps"):
        VolumeModelConfig(steps=0)


def test_labels_batches_and_dtypes_the_model_cannot_take_are_named():
    mc = VolumeModel(tiny(context="class", n_classes=3))
    with pytest.raises(ValueError, match=r"must be in 0..2 \(model.n_classes 3\), got 0..5"):
        mc(prim(2), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="integer labels"):
        mc(prim(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="B=0"):
        mc(prim(2)[:0], torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x.to\(torch.float32\)"):
        mc(prim(2).double(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n \\(samples\\)"):
        mc.generate(0, torch.zeros(0, dtype=torch.long))
    out = mc.generate(2, torch.tensor([0, 2]))  # in range: fine
    assert out.mean.shape == (2, 1, 12, 12, 12) and torch.isfinite(out.mean).all()
