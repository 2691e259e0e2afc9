"""Self-imitation's own search (``train.self_imitation_search``): each visit renders Gaussian
steps from an image's best and keeps the best of them when it beats it."""

from types import SimpleNamespace

import numpy as np
import torch

from tests.test_mesh_step import small_model_and_oracle


def test_proposals_are_gaussian_steps_of_the_stated_std_from_each_images_best():
    from learners.self_imitation import SelfImitation

    replay = SelfImitation(4, 3, "cpu", search=20000, search_std=0.05)
    replay.m[2] = torch.tensor([1.0, -2.0, 0.5])
    p = replay.proposals(np.array([2, 0]), torch.Generator().manual_seed(0))
    assert p.shape == (2, 20000, 3)
    torch.testing.assert_close(p.mean(1), replay.m[[2, 0]], atol=0.003, rtol=0)
    torch.testing.assert_close(p.std(1), torch.full((2, 3), 0.05), atol=0.002, rtol=0)


def test_an_offer_replaces_a_best_only_when_it_is_better():
    from learners.self_imitation import SelfImitation

    replay = SelfImitation(3, 2, "cpu", search=2)
    m = torch.tensor([[[1.0, 1.0], [2.0, 2.0]], [[3.0, 3.0], [4.0, 4.0]]])
    replay.offer(np.array([0, 1]), m, torch.tensor([[-5.0, -1.0], [-7.0, -8.0]]))
    torch.testing.assert_close(replay.r[:2], torch.tensor([-1.0, -7.0]))
    torch.testing.assert_close(replay.m[:2], torch.tensor([[2.0, 2.0], [3.0, 3.0]]))
    replay.offer(np.array([0, 1]), m + 10, torch.tensor([[-3.0, -2.0], [-6.0, -9.0]]))
    torch.testing.assert_close(replay.r[:2], torch.tensor([-1.0, -6.0]))   # 0 kept, 1 beaten
    torch.testing.assert_close(replay.m[1], torch.tensor([13.0, 13.0]))
    assert torch.isinf(replay.r[2])


def test_the_step_renders_the_search_and_its_bests_climb_a_known_reward():
    """Rewards known without rendering (minus the squared distance of the action to a target
    action): with the network held fixed, the bests' rewards never fall, rise beyond what the
    network's own samples reach, and every step renders K samples and J steps per image."""
    from gen3d.estimators import build
    from learners.mesh_step import MeshStep, RewardSource
    from learners.self_imitation import SelfImitation

    _, model, _ = small_model_and_oracle("rloo")
    target = model.decoder(torch.full((1, model.decoder.dim), 0.3))[0].detach().numpy()

    class Pool:
        sent = 0

        def submit(self, flat, target_idx):
            Pool.sent += len(flat)
            return -((flat - target) ** 2).sum(1)

        def collect(self, ticket):
            return SimpleNamespace(rewards=ticket, wait_s=0.0)

    x, idx = torch.rand(2, 3, 32, 32), np.array([0, 1])
    gen = torch.Generator().manual_seed(0)

    def bests_after(search):
        replay = SelfImitation(2, model.decoder.dim, "cpu", search=search, search_std=0.05)
        step = MeshStep(model, build("rloo"), RewardSource(Pool()), 2, replay, 0.25)
        seen = []
        for k in range(30):
            step(x, idx, 4, gen, k)
            seen.append(replay.r.clone())
        model.zero_grad()
        return torch.stack(seen)

    Pool.sent = 0
    alone = bests_after(0)
    assert Pool.sent == 30 * 2 * 4
    Pool.sent = 0
    searched = bests_after(8)
    assert Pool.sent == 30 * 2 * (4 + 8)
    assert (searched[1:] >= searched[:-1]).all()
    assert (searched[-1] > alone[-1] + 1.0).all(), (searched[-1], alone[-1])


def test_a_search_that_could_not_run_is_a_config_error_and_a_step_counts_its_renders(tmp_path):
    import pytest

    from learners.config import ConfigError
    from learners.mesh_config import MeshTrainConfig
    from learners.mesh_train import make_estimator
    from tests.test_mesh_train import tiny

    with pytest.raises(ValueError, match="self_imitation_search: 8 .*self_imitation > 0"):
        MeshTrainConfig(self_imitation_search=8)
    tc = MeshTrainConfig(batch=16, samples=16, self_imitation=0.25, self_imitation_search=8)
    assert tc.renders_per_step == 16 * (16 + 8)
    assert MeshTrainConfig(batch=16, samples=16).renders_per_step == 256
    cfg = tiny(tmp_path, self_imitation=0.25, self_imitation_search=4)
    cfg.estimator.name = "pathwise"
    with pytest.raises(ConfigError, match="self_imitation_search.*'pathwise'.*set it to 0"):
        make_estimator(cfg)


def test_soft_line_steps_are_collinear_up_the_soft_gradient_at_the_stated_sizes():
    """J = 6 steps from a best: each is (size_j / RMS) times the exact gradient of the soft
    log-likelihood there, sizes std * 2^(j - 3)."""
    from learners.best_search import SoftLineSearch

    _, model, oracle = small_model_and_oracle("rloo")
    best = 0.05 * torch.randn(2, model.decoder.dim, generator=torch.Generator().manual_seed(3))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    p = SoftLineSearch(oracle, 6, 0.04).proposals(best, x)
    m = best.clone().requires_grad_()
    oracle.loglik(m[:, None], x).sum().backward()
    g = m.grad
    unit = g / g.pow(2).mean(1, keepdim=True).sqrt()
    sizes = 0.04 * 2.0 ** torch.arange(-3.0, 3.0)
    torch.testing.assert_close(p - best[:, None], sizes[None, :, None] * unit[:, None],
                               rtol=1e-4, atol=1e-6)
    assert not any(q.grad is not None for q in model.parameters())  # the model is untouched


def test_the_soft_line_search_finds_the_sphere_gl_drew(renderer):
    """A grey sphere of radius 0.9 drawn by GL at 64x64; self-imitation's best starts at the
    base sphere (radius 0.6, the parameters 0, IoU 0.44) and only moves along soft-gradient
    steps that GL's rewards pick: 15 visits of 8 steps find the silhouette to IoU 0.97 (as a
    smaller sphere nearer the camera, which perspective cannot tell apart), and the best's GL
    reward never falls."""
    from envs.mesh_env import render_actions
    from envs.spaces import gaussian_loglik
    from learners.self_imitation import SelfImitation
    from tests.test_soft_mean import sphere_setup

    model, oracle = sphere_setup(renderer)
    y00 = float(model.decoder.Ys[0, 0])
    truth = torch.zeros(1, model.decoder.dim)
    truth[0, 0] = float(np.log(0.9 / 0.6) / y00)

    def draw(m):
        return render_actions(renderer, model.decoder(m).detach().numpy(), mask=True)

    def iou(m):
        got = draw(m).mask
        return (got & target.mask).sum() / (got | target.mask).sum()

    target = draw(truth)
    assert iou(torch.zeros_like(truth)) < 0.5
    image = torch.from_numpy(target.rgb).permute(0, 3, 1, 2).float() / 255
    replay = SelfImitation(1, model.decoder.dim, "cpu", search=8, search_std=0.05,
                           oracle=oracle)
    idx, seen = np.array([0]), []
    for _ in range(15):
        p = replay.proposals(idx, None, image)
        r = gaussian_loglik(np.repeat(target.rgb, 8, 0), draw(p[0]).rgb, 0.1)
        replay.offer(idx, p, torch.as_tensor(r, dtype=torch.float32)[None])
        seen.append(float(replay.r[0]))
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert seen[-1] > seen[0] and iou(replay.m) > 0.97, iou(replay.m)


def test_a_soft_line_search_needs_steps():
    import pytest

    from learners.mesh_config import MeshTrainConfig

    with pytest.raises(ValueError, match="self_imitation_search_soft: .*which is 0: set it"):
        MeshTrainConfig(self_imitation=0.25, self_imitation_search_soft=True)
