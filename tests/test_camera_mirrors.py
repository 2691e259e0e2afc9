"""The camera's mirrors against the renderer: the mesh decoded from mapped parameters renders
as the mirror image of the original's, pixel for pixel (unlit, so the lights' asymmetry does
not enter), for every kind of shape, colour and rotation part the model has."""

import numpy as np
import pytest
import torch

from envs import spaces
from gen3d import camera_mirrors as cm
from gen3d.image_symmetries import ImageSymmetries
from gen3d.geometry import Lights
from gen3d.mesh_model import MeshDecoder, MeshModelConfig

VARIANTS = [
    {},
    {"shape": "raw", "colour": "raw"},
    {"shape_symmetry": "mirror", "colour": "uniform", "rotation": True},
    {"colour": "palette", "rotation": True, "shape_degree": 4},
    {"colour_at": "normals"},
    {"colour": "palette", "colour_at": "normals", "rotation": True, "shape_degree": 4},
]


@pytest.fixture
def unlit(renderer):
    renderer.set_lights(Lights(directions=(), colours=(), ambient=(1.0, 1.0, 1.0)))
    yield renderer
    renderer.set_lights(Lights())


def render(r, decoder, m):
    with torch.no_grad():
        out = r.render_rays(**spaces.unpack(decoder(m).numpy()), mask=True)
    return out.rgb, out.mask


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(map(str, v.values())) or "main")
def test_a_mapped_mesh_renders_as_the_mirror_image_of_the_original(unlit, variant):
    dec = MeshDecoder(MeshModelConfig(**variant))
    gen = torch.Generator().manual_seed(0)
    m = 0.3 * torch.randn(8, dec.dim, generator=gen)
    rgb, mask = render(unlit, dec, m)
    assert 0.05 < mask.mean() < 0.6  # meshes of some size, off centre
    maps = cm.parameter_maps(dec)
    for g in range(len(cm.NAMES)):
        got_rgb, got_mask = render(unlit, dec, m @ maps[g].T)
        want = cm.mirror_images(torch.from_numpy(rgb).permute(0, 3, 1, 2),
                                torch.full((8,), g)).permute(0, 2, 3, 1).numpy()
        want_mask = cm.mirror_images(torch.from_numpy(mask)[:, None], torch.full((8,), g))[:, 0].numpy()
        assert (got_mask != want_mask).mean() < 1e-3, cm.NAMES[g]  # edge pixels' ties at most
        diff = np.abs(got_rgb.astype(int) - want.astype(int)).max(-1)
        assert (diff > 2).mean() < 2e-3, cm.NAMES[g]


def test_each_map_is_its_own_inverse_and_the_identity_is_the_identity():
    dec = MeshDecoder(MeshModelConfig())
    maps = cm.parameter_maps(dec)
    torch.testing.assert_close(maps[0], torch.eye(dec.dim))
    for a in maps:
        torch.testing.assert_close(a @ a, torch.eye(dec.dim), atol=1e-5, rtol=0)


def test_a_quarter_turn_is_not_a_mirror_of_the_rays():
    """Why only four: the 162 rays are not mapped onto themselves by a quarter turn."""
    from gen3d import geometry as geo

    rays = geo.ico_rays()
    turned = rays[:, [1, 0, 2]] * np.array([-1, 1, 1])
    assert np.linalg.norm(turned[:, None] - rays[None], axis=-1).min(1).max() > 0.05
    for diag in cm.WORLD.numpy():
        mirrored = rays * diag
        assert np.linalg.norm(mirrored[:, None] - rays[None], axis=-1).min(1).max() < 1e-9


def world_vertices(decoder, m):
    """(B, 162, 3) the decoded meshes' vertices in the camera frame, and their centres (B, 3)."""
    from gen3d import geometry as geo

    with torch.no_grad():
        a = spaces.unpack(decoder(m).numpy())
    local = a["lengths"][..., None] * geo.ico_rays()
    rot = geo.axis_angle_to_matrix(a["rotation"])
    return np.einsum("bij,bvj->bvi", rot, local) + a["translation"][:, None], a["translation"]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(map(str, v.values())) or "main")
def test_the_depth_flip_mirrors_each_mesh_front_to_back_about_its_centre(variant):
    dec = MeshDecoder(MeshModelConfig(**variant))
    m = 0.3 * torch.randn(6, dec.dim, generator=torch.Generator().manual_seed(1))
    flip = cm.depth_flip(dec)
    v, centre = world_vertices(dec, m)
    got, got_centre = world_vertices(dec, m @ flip.T)
    np.testing.assert_allclose(got_centre, centre, atol=1e-6)
    want = (v - centre[:, None]) * np.array([1.0, 1, -1]) + centre[:, None]
    gap = np.linalg.norm(got[:, :, None] - want[:, None], axis=-1).min(-1)  # the same point set
    assert gap.max() < 1e-4
    assert np.abs(v[..., 2] - want[..., 2]).max() > 0.05  # the meshes are not flat in depth
    torch.testing.assert_close(flip @ flip, torch.eye(dec.dim), atol=1e-5, rtol=0)


def test_rotation_hypotheses_have_no_depth_flip():
    with pytest.raises(ValueError, match="self_imitation_search_flip"):
        cm.depth_flip(MeshDecoder(MeshModelConfig(rotation_hypotheses=4, rotation=True)))


def test_mirrored_images_and_parameters_are_indexed_per_image():
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)
    out = cm.mirror_images(x, torch.tensor([1, 3]))
    torch.testing.assert_close(out[0, 0], torch.tensor([[1.0, 0], [3, 2]]))  # left-right
    torch.testing.assert_close(out[1, 0], torch.tensor([[7.0, 6], [5, 4]]))  # half turn
    dec = MeshDecoder(MeshModelConfig())
    mirrors = ImageSymmetries(dec)
    m = torch.randn(2, 3, dec.dim)
    got = mirrors.to_frame(m, torch.tensor([0, 2]))
    torch.testing.assert_close(got[0], m[0])
    torch.testing.assert_close(got[1], m[1] @ mirrors.maps[2].T)


def test_rotation_hypotheses_have_no_map():
    with pytest.raises(ValueError, match="rotation_hypotheses"):
        cm.parameter_maps(MeshDecoder(MeshModelConfig(rotation_hypotheses=4, rotation=True)))


def mirrored_step_setup(renderer):
    """A 64x64 model answering off centre (its write bias), four unlit GL targets of
    off-centre meshes, and a pool that renders unlit and scores against the targets."""
    from gen3d.mesh_model import MeshModel
    from learners.config import from_dict
    from learners.mesh_train import MeshRunConfig

    cfg = from_dict(MeshRunConfig, {"data": {"size": 64}, "model": {
        "hidden": 8, "channels": 4, "shape_degree": 3, "colour": "sh", "colour_degree": 1}})
    torch.manual_seed(0)
    model = MeshModel(cfg.model, 64)
    with torch.no_grad():
        model.write.bias.copy_(0.4 * torch.randn(model.decoder.dim))
    truth = 0.4 * torch.randn(4, model.decoder.dim)
    targets, _ = render(renderer, model.decoder, truth)
    return model, targets


class UnlitPool:
    def __init__(self, renderer, decoder, targets):
        from types import SimpleNamespace

        self.r, self.targets, self.ns = renderer, targets, SimpleNamespace

    def submit(self, flat, target_idx):
        from envs.spaces import gaussian_loglik

        rgb = self.r.render_rays(**spaces.unpack(flat)).rgb
        return gaussian_loglik(self.targets[target_idx], rgb, 0.1)

    def collect(self, ticket):
        return self.ns(rewards=ticket, wait_s=0.0)


@pytest.mark.parametrize("colour_orders", [False, True], ids=["mirrors", "and colour orders"])
def test_a_mirrored_samples_reward_is_its_own_render_against_the_mirrored_image(unlit, colour_orders):
    """Each image is shown in a mirror drawn at random; each sample's reward from the pool
    (which renders against the image itself) equals the likelihood of the mirrored image
    under the sample's own render, computed with no map at all. Rewarded unmapped, it would
    be far off."""
    from envs.spaces import gaussian_loglik
    from gen3d.estimators import build
    from learners.mesh_step import MeshStep, RewardSource

    model, targets = mirrored_step_setup(unlit)
    seen = []
    sample = model.sample
    model.sample = lambda images, k, **kw: seen.append((images, sample(images, k, **kw))) or seen[-1][1]
    sym = ImageSymmetries(model.decoder, True, colour_orders)
    if colour_orders:  # the two cyclic orders, which are not their own inverses, and mirrors
        sym.draw = lambda n, generator, device: torch.tensor([13, 18][:n])
    step = MeshStep(model, build("rloo"), RewardSource(UnlitPool(unlit, model.decoder, targets)), 2,
                    symmetries=sym)
    x = torch.from_numpy(targets).permute(0, 3, 1, 2).float() / 255
    res = step(x, np.arange(4), 3, torch.Generator().manual_seed(2), 0)
    want, unmapped, shown = [], [], []
    for images, s in seen:
        img = (images.permute(0, 2, 3, 1) * 255).round().byte().numpy()
        rgb = unlit.render_rays(**spaces.unpack(s.actions.reshape(-1, s.actions.shape[-1]).numpy())).rgb
        want.append(gaussian_loglik(np.repeat(img, 3, 0), rgb, 0.1).reshape(-1, 3))
        unmapped.append(gaussian_loglik(np.repeat(targets[len(shown):len(shown) + len(img)], 3, 0),
                                        rgb, 0.1).reshape(-1, 3))
        shown.append(images)
    want, unmapped = np.concatenate(want), np.concatenate(unmapped)
    mirrored = ~torch.isclose(torch.cat(shown), x).all(-1).all(-1).all(-1)
    assert mirrored.any()
    got = res.reward.numpy()
    assert np.abs(got - want).max() < 100, np.abs(got - want).max()  # 2 edge pixels at most
    assert (np.abs(got - unmapped)[mirrored.numpy()] > 1000).all()


@pytest.mark.parametrize("colour_orders", [False, True], ids=["mirrors", "and colour orders"])
def test_the_replays_bests_are_kept_in_the_images_own_frame(colour_orders):
    """Rewards known without rendering (minus the squared distance of the rendered action to
    a target action per image): after steps with images shown in random mirrors, each image's
    best decodes, in the image's own frame, to an action whose reward is the one kept."""
    from types import SimpleNamespace

    from gen3d.estimators import build
    from learners.mesh_step import MeshStep, RewardSource
    from learners.self_imitation import SelfImitation
    from tests.test_mesh_step import small_model_and_oracle

    _, model, _ = small_model_and_oracle("rloo")
    with torch.no_grad():
        model.write.bias.copy_(0.3 * torch.randn(model.decoder.dim))
    target = model.decoder(0.3 * torch.randn(3, model.decoder.dim)).detach().numpy()

    def reward(flat, idx):
        return -((flat - target[idx]) ** 2).sum(-1)

    class Pool:
        def submit(self, flat, target_idx):
            return reward(flat, target_idx)

        def collect(self, ticket):
            return SimpleNamespace(rewards=ticket, wait_s=0.0)

    replay = SelfImitation(3, model.decoder.dim, "cpu")
    step = MeshStep(model, build("rloo"), RewardSource(Pool()), 1, replay, 0.25,
                    symmetries=ImageSymmetries(model.decoder, True, colour_orders))
    gen = torch.Generator().manual_seed(0)
    for k in range(6):
        step(torch.rand(3, 3, 32, 32), np.arange(3), 4, gen, k)
    kept = reward(model.decoder(replay.m).detach().numpy(), np.arange(3))
    np.testing.assert_allclose(kept, replay.r.numpy(), rtol=1e-5)


@pytest.mark.parametrize("switch", ["mirror_images", "colour_orders"])
def test_mirrors_or_colour_orders_with_soft_renders_are_config_errors(tmp_path, switch):
    from learners.config import ConfigError, from_dict
    from learners.mesh_config import MeshTrainConfig
    from learners.mesh_train import MeshRunConfig, make_estimator
    from tests.test_mesh_train import tiny

    with pytest.raises(ValueError, match=f"{switch}: the soft-mean term"):
        MeshTrainConfig(**{switch: True}, soft_mean=1.0)
    cfg = tiny(tmp_path, **{switch: True})
    cfg.estimator.name = "pathwise"
    with pytest.raises(ConfigError, match=f"{switch}: estimator 'pathwise' takes soft"):
        make_estimator(cfg)
    hypotheses = {"model": {"rotation": True, "rotation_hypotheses": 4}}
    if switch == "mirror_images":
        with pytest.raises(ConfigError, match="rotation_hypotheses have no mirror map"):
            from_dict(MeshRunConfig, {"train": {switch: True}, **hypotheses})
    else:  # the colour orders leave the pose alone, so the hypotheses keep
        from_dict(MeshRunConfig, {"train": {switch: True}, **hypotheses})


@pytest.mark.parametrize("colour_orders,shown", [(False, [1, 3]), (True, [17, 10])],
                         ids=["mirrors", "a mirror after a cyclic colour order"])
def test_the_replay_pulls_each_sample_towards_the_best_seen_in_the_images_mirror(colour_orders, shown):
    """The replay term's exact gradient in each sample's mean: adv * (P_g best - mean) / std^2
    over the b*K samples, the best mapped into the frame g its image was shown in (a cyclic
    order of the channels is not its own inverse: the map into the frame, not out of it)."""
    from types import SimpleNamespace

    from learners.self_imitation import SelfImitation
    from tests.test_mesh_step import small_model_and_oracle

    _, model, _ = small_model_and_oracle("rloo")
    d, mirrors = model.decoder.dim, ImageSymmetries(model.decoder, True, colour_orders)
    replay = SelfImitation(2, d, "cpu", train_std=False)
    replay.m.copy_(torch.randn(2, d))
    replay.r.copy_(torch.tensor([5.0, 7.0]))
    mean = torch.randn(2, 3, d, requires_grad=True)
    s = SimpleNamespace(m=torch.randn(2, 3, d), mean=mean)
    reward, g = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]]), torch.tensor(shown)
    replay.loss(model, s, reward, np.array([0, 1]), (mirrors, g)).backward()
    std = model.std().detach()
    adv = torch.tensor([3.0, 6.0])  # best minus the mean reward
    target = torch.stack([replay.m[i] @ mirrors.maps[g[i]].T for i in range(2)])
    want = -adv[:, None, None] * (target[:, None] - mean.detach()) / std**2 / 6
    torch.testing.assert_close(mean.grad, want, rtol=1e-4, atol=1e-6)


def test_the_answer_averaged_over_mirrors_is_exactly_mirror_equivariant():
    """Any network, averaged over the four mirrors: the answer to a mirrored image is the
    mirror of the answer (the plain network's is not), and its colours read from the image."""
    from gen3d.mesh_model import MeshModel

    torch.manual_seed(0)
    model = MeshModel(MeshModelConfig(hidden=16, channels=4, infer_mirrors=True,
                                      read_colours=True), 32)
    with torch.no_grad():
        model.write.weight.normal_(0, 0.3)
    x = torch.rand(3, 3, 32, 32)
    maps = model.symmetries.maps
    for k in range(1, 4):
        g = torch.full((3,), k)
        torch.testing.assert_close(model.answer(cm.mirror_images(x, g)),
                                   model.answer(x) @ maps[k].T, atol=1e-5, rtol=1e-4)
        plain = model.mean_params(cm.mirror_images(x, g)) - model.mean_params(x) @ maps[k].T
        assert plain.abs().max() > 1e-2
    assert model.infer(x).shape == (3, 162 * 4 + 6)
    with pytest.raises(ValueError, match="infer_mirrors: rotation_hypotheses"):
        MeshModelConfig(infer_mirrors=True, rotation=True, rotation_hypotheses=4)
