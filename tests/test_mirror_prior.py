"""The mirror prior (``model.mirror_std``, ``gen3d.mirror_prior``): a shape's harmonics
mirrored in a plane exactly, every kind's true shape symmetric about its own planes, and
the step's loss carrying the prior."""

import numpy as np
import pytest
import torch

from gen3d import geometry as geo
from gen3d import primitives as prim
from gen3d.estimators import build
from gen3d.mesh_model import MeshModel, MeshModelConfig
from gen3d.mirror_prior import MirrorPrior, mirror_maps, plane_normals
from gen3d.mesh_pose import turns
from learners.mesh_step import surrogate

RAYS = geo.ico_rays().astype(np.float64)


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def prior():
    return MirrorPrior(6, 1.0)


def _harmonics(kind, rot, origin=(0.0, 0.0, 0.0)):
    """Degree-6 harmonics (1, 49) of log ray length of ``kind``'s template turned by ``rot``,
    about ``origin`` in its own frame."""
    mesh = prim.primitive(kind)
    lengths, _ = geo.ray_hits(mesh.verts - np.asarray(origin), mesh.faces, (RAYS @ rot)[None])
    c = np.linalg.lstsq(geo.real_sph_harm(RAYS, 6), np.log(lengths[0]), rcond=None)[0]
    return torch.tensor(c, dtype=torch.float32)[None]


def test_a_map_mirrors_any_function_of_its_degree_in_its_plane():
    rng = np.random.default_rng(0)
    normals = _unit(rng.normal(size=(3, 3)))
    maps = mirror_maps(4, normals)
    d = _unit(rng.normal(size=(400, 3)))
    c = rng.normal(size=25)
    for n, m in zip(normals, maps):
        mirrored = geo.real_sph_harm(d - 2 * (d @ n)[:, None] * n, 4) @ c
        np.testing.assert_allclose(geo.real_sph_harm(d, 4) @ (m @ c), mirrored, atol=1e-5)
        np.testing.assert_allclose(m @ m, np.eye(25), atol=1e-6)  # a mirror twice is nothing


def test_the_planes_cover_the_half_sphere_once():
    n = plane_normals(3)
    assert np.allclose(np.linalg.norm(n, axis=1), 1)
    # no plane twice (n and -n are one plane), and every direction within 6 degrees of one
    assert np.abs(n @ n.T - np.eye(len(n))).max() < 0.9999
    probe = _unit(np.random.default_rng(1).normal(size=(2000, 3)))
    assert np.degrees(np.arccos(np.abs(probe @ n.T).max(1))).max() < 6


def _lengths(kind, dirs, origin=(0.0, 0.0, 0.0)):
    mesh = prim.primitive(kind)
    return geo.ray_hits(mesh.verts - np.asarray(origin), mesh.faces, dirs[None])[0][0]


@pytest.mark.parametrize("kind", ["cube", "cylinder", "cone", "pyramid", "prism"])
def test_the_plane_found_for_a_turned_kind_is_a_mirror_of_the_object(prior, kind):
    """Cast against the template itself, not its harmonics: rays and their mirrors in the
    plane found (turned into the template's frame) meet the object at the same distance, as
    they do not for a plane chosen at random."""
    rng = np.random.default_rng(2)
    d = _unit(rng.normal(size=(500, 3)))

    def gap(v):  # the median ray's log distance to the object, less its mirror's
        return np.median(np.abs(np.log(_lengths(kind, d) / _lengths(kind, d - 2 * (d @ v)[:, None] * v))))

    for rot in turns(40, 2)[-4:]:  # random turns (the table starts with the cube's 24)
        n = rot.T @ prior.normals[prior.plane(_harmonics(kind, rot))][0].double().numpy()
        at_random = min(gap(_unit(rng.normal(size=3))) for _ in range(5))
        # the planes are 2.4 degrees apart: a sharp edge's rays miss their mirrors by ~1%
        assert gap(n) < 0.02 and gap(n) < 0.4 * at_random, (gap(n), at_random)


def test_a_pyramid_about_a_point_off_its_planes_is_far_from_symmetric(prior):
    for rot in turns(40, 3)[-4:]:
        on_axis = prior(_harmonics("pyramid", rot, origin=(0.0, -0.17, 0.0)))
        off = prior(_harmonics("pyramid", rot, origin=(0.12, 0.05, 0.09)))
        assert on_axis < 0.2 * off


def test_the_gradient_is_that_of_the_found_plane_and_descends_to_a_symmetric_shape(prior):
    torch.manual_seed(0)
    s = (0.3 * torch.randn(2, 49)).requires_grad_(True)
    value = prior(s)
    value.sum().backward()
    m = prior.maps[prior.plane(s.detach())]
    a = torch.eye(49) - m
    expected = torch.einsum("nji,njk,nk->ni", a, a, s.detach())  # (I - M)^T (I - M) s / std^2
    torch.testing.assert_close(s.grad, expected, atol=1e-4, rtol=1e-4)
    start = value.detach().clone()
    x = s.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        prior(x).sum().backward()
        opt.step()
    assert (prior(x) < 1e-3 * start).all()
    assert (x.detach() ** 2).sum(1).min() > 0.1 * (s.detach() ** 2).sum(1).min()  # not zeroed


def _model(**kw):
    torch.manual_seed(0)
    return MeshModel(MeshModelConfig(hidden=16, channels=8, shape_degree=3, colour="uniform",
                                     mirror_std=0.1, **kw), 32)


def test_the_steps_loss_carries_the_prior_exactly():
    model = _model()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # a mean shape away from the sphere, which every plane mirrors
        model.write.bias[model.decoder.slices["shape"]] = torch.linspace(-0.2, 0.3, 16)
    s = model.sample(x, 4, generator=torch.Generator().manual_seed(1))
    shape = s.mean[:, 0, model.decoder.slices["shape"]]
    torch.testing.assert_close(s.shape_prior, model.mirror_prior(shape))
    assert (s.shape_prior > 0).all()
    est, reward = build("rloo"), torch.randn(2, 4)
    with_prior, _ = surrogate(est, s, x, reward)
    s.shape_prior = None
    without, _ = surrogate(est, s, x, reward)
    torch.testing.assert_close(with_prior - without, model.mirror_prior(shape).mean())


def test_off_there_is_no_prior_and_the_shape_must_be_free_harmonics():
    model = MeshModel(MeshModelConfig(hidden=16, channels=8, shape_degree=3, colour="uniform"), 32)
    assert model.mirror_prior is None
    assert model.sample(torch.rand(1, 3, 32, 32), 2).shape_prior is None
    with pytest.raises(ValueError, match="mirror_std: 0.1 mirrors the shape's harmonics"):
        MeshModelConfig(shape="raw", mirror_std=0.1)
    with pytest.raises(ValueError, match="shape_symmetry 'mirror'"):
        MeshModelConfig(shape_symmetry="mirror", rotation=True, mirror_std=0.1)


def test_with_mirror_reward_the_step_takes_the_prior_off_every_reward_and_the_bests_grow_symmetric():
    """A pool whose every render scores 0: what the samples and the bests' proposals are
    rewarded is minus the prior, about the plane of each image's mean (samples) or best
    (proposals); the bests kept are the least asymmetric, and grow more symmetric."""
    from types import SimpleNamespace

    from learners.mesh_step import MeshStep, RewardSource
    from learners.self_imitation import SelfImitation

    model = _model()
    with torch.no_grad():
        model.write.bias[model.decoder.slices["shape"]] = torch.linspace(-0.2, 0.3, 16)

    class Pool:
        def submit(self, flat, target_idx):
            return np.zeros(len(flat))

        def collect(self, ticket):
            return SimpleNamespace(rewards=ticket, wait_s=0.0)

    seen, offered = [], []
    sample, offer = model.sample, SelfImitation.offer
    model.sample = lambda *a, **k: seen.append(sample(*a, **k)) or seen[-1]
    replay = SelfImitation(2, model.decoder.dim, "cpu", search=6, search_std=0.05)
    replay.offer = lambda idx, m, r: offered.append((m, r, replay.m.clone())) or offer(replay, idx, m, r)
    step = MeshStep(model, build("rloo"), RewardSource(Pool()), 1, replay, 0.25, mirror_reward=True)
    x, idx, gen = torch.rand(2, 3, 32, 32), np.array([0, 1]), torch.Generator().manual_seed(0)
    first = step(x, idx, 4, gen, 0)
    s = seen[0]
    torch.testing.assert_close(first.reward, -model.mirror_penalty(s.m, s.mean[:, 0]))
    proposals, pr, best_before = offered[0]  # the proposals are offered first, then the samples
    torch.testing.assert_close(pr, -model.mirror_penalty(proposals, best_before))
    start = replay.r.clone()
    for k in range(1, 25):
        step(x, idx, 4, gen, k)
    model.zero_grad()
    assert (replay.r > start).all() and (replay.r <= 0).all()
    shape = replay.m[:, model.decoder.slices["shape"]]
    # scored about an earlier plane, each best is no more symmetric than about its own
    assert (model.mirror_prior(shape) <= -replay.r + 1e-5).all(), (model.mirror_prior(shape), replay.r)


def test_mirror_reward_needs_the_prior():
    from learners.config import from_dict
    from learners.mesh_train import MeshRunConfig

    with pytest.raises(ValueError, match="train.mirror_reward: .* set model.mirror_std"):
        from_dict(MeshRunConfig, {"train": {"mirror_reward": True}})


def test_the_line_search_with_the_prior_climbs_towards_a_symmetric_best():
    """An oracle that likes every mesh alike: the soft line search's steps go down the prior
    alone, so the small ones are more nearly symmetric than the best they leave."""
    from learners.best_search import SoftLineSearch

    model = _model()

    class Flat:
        def loglik(self, m, images):
            return 0.0 * m.sum(-1)

    best = torch.zeros(2, model.decoder.dim)
    best[:, model.decoder.slices["shape"]] = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    x = torch.zeros(2, 3, 32, 32)
    steps = SoftLineSearch(Flat(), 4, 0.002, prior=model.mirror_log_prior).proposals(best, x)
    before = model.mirror_log_prior(best)
    for j in range(4):
        assert (model.mirror_log_prior(steps[:, j]) < before).all()
    blind = SoftLineSearch(Flat(), 4, 0.002).proposals(best, x)
    torch.testing.assert_close(blind, best[:, None].expand_as(blind))  # no gradient: no step
