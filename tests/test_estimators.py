"""Gradient estimators against exact gradients, plus registry, noise and checkpoint behaviour.

Statistical tolerance: each test collects N >= 2000 independent per-input estimates (every row
of a batch has its own copy of the parameters: see gen3d.estimators.toys) and
requires every coordinate's mean to lie within Z = 4 standard errors of the exact gradient
(a false alarm has probability ~6e-5 per coordinate). Generators are seeded, so the outcome is
deterministic, and ``test_tolerance_detects_a_biased_baseline`` shows the check has power.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import textwrap

import pytest
import torch
from torch.distributions import Normal

from gen3d.estimators import Batch, Estimator, available, build, register
from gen3d.estimators.base import leave_one_out_mean
from gen3d.estimators.toys import (
    CAT_LOGITS,
    CAT_REWARD,
    OFFSET,
    Q,
    categorical_estimates,
    categorical_exact,
    collect,
    gaussian_draw,
    gaussian_estimates,
    gaussian_exact,
    gaussian_mean_reward,
    gaussian_reward,
    z_scores,
)

Z = 4.0
ELBO_ESTIMATORS = ["reinforce", "moving_average", "neural", "rloo", "optimal_cv",
                   "antithetic", "lax"]
OPTIONS = {"neural": {"hidden": 16}, "lax": {"hidden": 16}, "moving_average": {"decay": 0.8}}


def assert_unbiased(estimates: torch.Tensor, exact: torch.Tensor, what: str) -> None:
    z = z_scores(estimates, exact)
    assert (z.abs() < Z).all(), (f"{what}: mean {estimates.mean(0).tolist()} vs exact "
                                 f"{exact.tolist()}, z-scores {z.tolist()}")


@pytest.mark.parametrize("name", ELBO_ESTIMATORS)
@pytest.mark.parametrize("reward", ["linear", "quadratic"])
def test_unbiased_on_gaussian(name: str, reward: str) -> None:
    q = torch.zeros(2) if reward == "linear" else Q
    est = build(name, **OPTIONS.get(name, {}))
    assert_unbiased(gaussian_estimates(est, q), gaussian_exact(q), f"{name}/{reward}")
    if name in ("moving_average", "neural", "lax"):  # the baseline really was in play
        assert abs(est.stats()["baseline_mean"] - gaussian_mean_reward(q)) < 1.0


@pytest.mark.parametrize("name", [n for n in ELBO_ESTIMATORS if n != "lax"])
def test_unbiased_on_categorical(name: str) -> None:
    est = build(name, **OPTIONS.get(name, {}))
    exact = categorical_exact(CAT_LOGITS, CAT_REWARD)
    assert_unbiased(categorical_estimates(est, CAT_LOGITS, CAT_REWARD), exact, f"{name}/categorical")


@register("test_leave_one_in")
class LeaveOneIn(Estimator):
    """A biased baseline (the mean including the sample itself): the tolerance must catch it."""

    def loss(self, batch: Batch) -> torch.Tensor:
        return self._score_loss(batch, batch.reward.mean(1, keepdim=True))


def test_tolerance_detects_a_biased_baseline() -> None:
    q = torch.zeros(2)
    z = z_scores(gaussian_estimates(build("test_leave_one_in"), q), gaussian_exact(q))
    assert z.abs().max() > 2 * Z  # its bias is -1/K of the gradient: plainly detected


def test_rloo_has_lower_variance_than_reinforce() -> None:
    q = Q
    var = {n: gaussian_estimates(build(n), q, K=8, warmup=0).var(0).sum().item()
           for n in ("reinforce", "rloo")}
    assert var["rloo"] < 0.3 * var["reinforce"], var  # measured ~0.17


def test_neural_baseline_learns_input_dependent_offsets() -> None:
    """Rewards whose offset depends on the input: the neural baseline tracks it, an EMA can't."""
    q, B = Q, 64
    feats = torch.randn(B, 3, generator=torch.Generator().manual_seed(1))
    offset = OFFSET + 10.0 * feats[:, 0]
    var = {}
    for name in ("moving_average", "neural"):
        est = build(name, **OPTIONS.get(name, {}))
        g = gaussian_estimates(est, q, B=B, warmup=300, steps=30, offset=offset, feats=feats)
        assert_unbiased(g, gaussian_exact(q), name)
        var[name] = g.var(0).sum().item()
    assert var["neural"] < 0.5 * var["moving_average"], var  # measured ~0.23


def test_lax_training_reduces_variance() -> None:
    """The learned control variate (trained to minimise variance) beats a moving average."""
    q = Q
    ema = gaussian_estimates(build("moving_average"), q, warmup=20).var(0).sum()
    lax = gaussian_estimates(build("lax", hidden=16), q, warmup=300).var(0).sum()
    assert lax < 0.3 * ema, (lax.item(), ema.item())  # measured ~0.08


# VIMCO: the gradient of the K-sample bound E log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k)
V_LOGITS = torch.tensor([0.2, -0.4, 0.9])
V_PRIOR = torch.log_softmax(torch.tensor([0.0, 0.5, -0.5]), -1)
V_LIK = torch.tensor([-1.0, -3.0, 0.5])


def iwae_bound_by_enumeration(logits: torch.Tensor, K: int) -> torch.Tensor:
    logq = torch.log_softmax(logits, -1)
    tuples = torch.tensor(list(itertools.product(range(len(logits)), repeat=K)))  # (n^K, K)
    logw = (V_LIK + V_PRIOR - logq)[tuples]
    return (logq[tuples].sum(1).exp() * (torch.logsumexp(logw, 1) - math.log(K))).sum()


def test_vimco_unbiased_on_categorical() -> None:
    K = 3
    logits0 = V_LOGITS.clone().requires_grad_(True)
    bound = iwae_bound_by_enumeration(logits0, K)
    (exact,) = torch.autograd.grad(bound, logits0)
    est = build("vimco")
    assert est.objective == "iwae"
    g = categorical_estimates(est, V_LOGITS, V_LIK, B=512, K=K, warmup=0, steps=8,
                              log_prior=V_PRIOR)
    assert_unbiased(g, exact, "vimco/categorical")
    assert abs(est.stats()["bound"] - bound.item()) < 0.2  # a mean over draws of the bound


V_X = torch.tensor([1.0, -0.5])


def v_reward(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((z - V_X) / 0.8).pow(2).sum(-1)


def test_vimco_unbiased_on_gaussian_against_reparameterisation() -> None:
    """No closed form for K > 1: compare with the reparameterised gradient of the same bound,
    an independent unbiased estimate, within Z combined standard errors."""
    K, B = 4, 512
    gen = torch.Generator().manual_seed(0)
    prior = Normal(0.0, 1.0)
    est, ref = build("vimco"), []

    def draw() -> tuple:
        params, _, z, logp = gaussian_draw(est, B, K, gen)
        z = z.detach()
        return params, Batch(logp, v_reward(z), log_prior=prior.log_prob(z).sum(-1))

    v = collect(est, draw, 0, 8)
    for _ in range(16):
        (mu, ls), _, z, _ = gaussian_draw(est, B, K, gen)
        logw = (v_reward(z) + prior.log_prob(z).sum(-1)
                - Normal(mu[:, None], ls.exp()[:, None]).log_prob(z).sum(-1))
        (torch.logsumexp(logw, 1) - math.log(K)).sum().backward()
        ref.append(torch.cat([mu.grad, ls.grad], 1))
    r = torch.cat(ref)
    se = (v.var(0) / len(v) + r.var(0) / len(r)).sqrt()
    zs = (v.mean(0) - r.mean(0)) / se
    assert (zs.abs() < Z).all(), (v.mean(0).tolist(), r.mean(0).tolist(), zs.tolist())
    _, batch = draw()
    assert abs(est.loss(batch).item() + est.stats()["bound"]) < 1e-5  # loss = minus the bound


# separation: auxiliary losses train only the estimator, the estimate reaches only the model
def test_neural_baseline_gradients_stay_separate() -> None:
    torch.manual_seed(0)
    B, K = 16, 4
    est = build("neural", hidden=8)
    feats = torch.randn(B, 3, requires_grad=True)  # as if encoder output, not yet detached
    theta = torch.randn(B, K, requires_grad=True)
    for _ in range(3):  # warm the running statistics
        est.loss(Batch(-theta.pow(2), 10 + torch.randn(B, K) + feats[:, :1].detach(),
                       features=feats))
    for p in est.net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    reward = 10 + torch.randn(B, K)
    with torch.no_grad():
        b = est.baseline(feats)[:, None]
    est.loss(Batch(-theta.pow(2), reward, features=feats)).backward()
    (want,) = torch.autograd.grad(-((reward - b) * -theta.pow(2)).mean(), theta)
    torch.testing.assert_close(theta.grad, want)
    assert feats.grad is None
    target = (reward - est.scale.mean) / est.scale.std
    fit = (est.net(feats.detach()) - target).pow(2).mean()
    for p, g in zip(est.net.parameters(), torch.autograd.grad(fit, list(est.net.parameters()))):
        torch.testing.assert_close(p.grad, g)


def test_lax_gradients_match_the_paper() -> None:
    """Model: (f - c(z)) grad log q + grad c(z(theta)); phi: d/dphi |that estimate|^2."""
    torch.manual_seed(0)
    q = Q
    est = build("lax", hidden=8)
    gaussian_estimates(est, q, B=8, warmup=3, steps=0)  # warm the running statistics
    for p in est.net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    est.zero_grad(set_to_none=True)
    ref = copy.deepcopy(est)
    B, K = 8, 4
    (mu, ls), _, z, logp = gaussian_draw(est, B, K, torch.Generator().manual_seed(5))
    reward = gaussian_reward(z.detach(), q, OFFSET)
    feats = torch.randn(B, 3)
    est.loss(Batch(logp, reward, sample=z, features=feats)).backward()
    # the same draw again (same seed, fresh copies of the parameters) for the reference
    (mu2, ls2), _, z, logp = gaussian_draw(est, B, K, torch.Generator().manual_seed(5))
    x, x_det = (torch.cat([v, feats[:, None].expand(-1, K, -1)], -1) for v in (z, z.detach()))
    surrogate = ((reward - ref._c(x_det)) * logp).mean() + ref._c(x).mean()
    g = torch.autograd.grad(surrogate, [mu2, ls2], create_graph=True)
    torch.testing.assert_close(mu.grad, -g[0].detach())
    torch.testing.assert_close(ls.grad, -g[1].detach())
    dphi = torch.autograd.grad(sum(gi.pow(2).sum() for gi in g), list(ref.net.parameters()))
    for p, d in zip(est.net.parameters(), dphi):
        torch.testing.assert_close(p.grad, d)


# noise, state, registry, errors
def test_antithetic_noise_is_paired() -> None:
    est = build("antithetic")
    eps = est.noise((200, 8, 10), generator=torch.Generator().manual_seed(0))
    assert eps.shape == (200, 8, 10)
    assert torch.equal(eps[:, 1::2], -eps[:, 0::2])
    first = eps[:, 0::2]  # the free half is standard normal
    assert abs(first.mean().item()) < 0.05 and abs(first.var().item() - 1) < 0.05
    assert not torch.equal(eps[:, 0], eps[:, 2])  # pairs differ from each other
    with pytest.raises(ValueError, match="even"):
        est.noise((2, 3, 1))
    logp = torch.zeros(2, 4, requires_grad=True)
    with pytest.raises(ValueError, match="pairs"):
        est.loss(Batch(logp, torch.zeros(2, 4), noise=torch.randn(2, 4, 1)))
    with pytest.raises(ValueError, match="K >= 4"):
        est.loss(Batch(logp[:, :2], torch.zeros(2, 2)))
    est = build("antithetic", baseline="moving_average")  # works from K = 2
    assert_unbiased(gaussian_estimates(est, Q, K=2), gaussian_exact(Q), "antithetic/ema/K=2")


def saved_and_loaded(est: Estimator, fresh: Estimator) -> Estimator:
    buf = io.BytesIO()
    torch.save(est.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    return fresh


def test_state_dict_round_trips_estimator_state() -> None:
    q = Q
    est = build("moving_average", decay=0.8)
    gaussian_estimates(est, q, B=32, warmup=5, steps=0)
    again = saved_and_loaded(est, build("moving_average", decay=0.8))
    assert int(again.ema.count) == 5 and again.ema.mean.item() == est.ema.mean.item()
    assert abs(again.ema.mean.item() - gaussian_mean_reward(q)) < 1.0
    again.eval()  # frozen in eval mode: repeated estimates share one baseline
    gaussian_estimates(again, q, B=32, warmup=3, steps=0)
    assert int(again.ema.count) == 5
    neural = build("neural", hidden=8)
    gaussian_estimates(neural, q, B=32, warmup=5, steps=0)
    again = saved_and_loaded(neural, build("neural", hidden=8))  # lazy: loading sizes it
    x = torch.randn(4, 3)
    torch.testing.assert_close(again.baseline(x), neural.baseline(x))


@register("test_scaled_rloo")
class ScaledRLOO(Estimator):
    """A user's estimator: RLOO with its estimate scaled by ``gain``."""

    min_samples = 2

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = gain

    def loss(self, batch: Batch) -> torch.Tensor:
        adv = batch.reward - leave_one_out_mean(batch.reward)
        return -self.gain * (adv * batch.logp).mean()


def test_user_registered_estimator_is_built_by_name() -> None:
    assert "test_scaled_rloo" in available()
    est = build("test_scaled_rloo", gain=0.5)
    assert isinstance(est, ScaledRLOO) and est.gain == 0.5 and est.name == "test_scaled_rloo"
    theta = torch.randn(3, 4, requires_grad=True)
    reward = torch.randn(3, 4)
    est.loss(Batch(theta * 1.0, reward)).backward()
    mine = theta.grad.clone()
    theta.grad = None
    build("rloo").loss(Batch(theta * 1.0, reward)).backward()
    torch.testing.assert_close(mine, 0.5 * theta.grad)  # the option reached the estimator
    with pytest.raises(ValueError, match="gain"):
        build("test_scaled_rloo", decay=0.9)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown estimator 'no_such'") as err:
        build("no_such")
    for name in ELBO_ESTIMATORS + ["vimco"]:
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="already taken"):
        register("rloo")(ScaledRLOO)
    assert type(build("rloo")).__name__ == "LeaveOneOut"


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch) -> None:
    """A package that only declares ``[project.entry-points."gen3d.estimators"]``."""
    (tmp_path / "g3d_test_plugin.py").write_text(textwrap.dedent("""
        from gen3d.estimators import Estimator

        class PluginEstimator(Estimator):
            def __init__(self, gain: float = 1.0):
                super().__init__()
                self.gain = gain

            def loss(self, batch):
                return -self.gain * (batch.reward * batch.logp).mean()
    """))
    info = tmp_path / "g3d_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: g3d-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[gen3d.estimators]\ntest_plugin = g3d_test_plugin:PluginEstimator\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "test_plugin" in available()
    est = build("test_plugin", gain=3.0)
    assert type(est).__name__ == "PluginEstimator" and est.gain == 3.0
    assert est.name == "test_plugin"


def test_bad_batches_are_refused_clearly() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="reward must have shape"):
        Batch(logp, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        Batch(logp, torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="log_prior"):
        build("vimco").loss(Batch(logp, torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        build("rloo").loss(Batch(logp[:, :1], torch.zeros(2, 1)))
    with pytest.raises(ValueError, match="rsample"):  # a categorical has no pathwise sample
        build("lax").loss(Batch(logp, torch.zeros(2, 3)))
    neural = build("neural")
    with pytest.raises(ValueError, match="features"):
        neural.loss(Batch(logp, torch.zeros(2, 3)))
    neural.loss(Batch(logp, torch.zeros(2, 3), features=torch.zeros(2, 5)))
    with pytest.raises(ValueError, match="width 5, got 4"):
        neural.loss(Batch(logp, torch.zeros(2, 3), features=torch.zeros(2, 4)))


def test_normalised_rloo_weighs_images_alike_and_keep_scale_restores_the_batch_size() -> None:
    torch.manual_seed(0)
    r = torch.randn(3, 5)
    big = r.clone()
    big[0] *= 10  # one image's log-likelihood varies ten times more

    def grad(reward, **kw):
        logp = torch.zeros(3, 5, requires_grad=True)
        build("rloo", normalize=True, eps=0.0, **kw).loss(Batch(logp, reward)).backward()
        return logp.grad

    # normalised, every image's pull is independent of its reward scale
    torch.testing.assert_close(grad(big), grad(r))
    # keep_scale: the same directions, times the batch's mean reward std
    torch.testing.assert_close(grad(big, keep_scale=True), grad(big) * big.std(1).mean())


def doc_example(doc: str, first_line: str) -> str:
    """The indented code block of ``doc`` that starts with ``first_line``, dedented."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == first_line)
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def documented_hybrid() -> type:
    """The hybrid estimator of ``gen3d.estimators``' docstring, run as written."""
    import gen3d.estimators as pkg

    code = doc_example(pkg.__doc__, "from gen3d.estimators import Batch, Estimator, "
                                    "leave_one_out_mean, register")
    scope = {"__name__": "gen3d_docs_example"}
    exec(compile(code, "gen3d/estimators/__init__.py (docstring)", "exec"), scope)
    return scope["SoftControlVariate"]


def test_the_documented_hybrid_is_unbiased_and_its_soft_control_variate_cuts_variance() -> None:
    cls = documented_hybrid()
    assert "soft_cv" in available() and cls.requires == {"reward", "soft_reward"}
    est = build("soft_cv", weight=1.0)
    assert est.soft_options() == {"sigma": 0.5} and not est.pathwise
    close = 0.8 * Q  # a soft reward that follows the true one closely, but not exactly
    exact = gaussian_exact(Q)
    g = gaussian_estimates(est, Q, soft_q=close)
    assert_unbiased(g, exact, "soft_cv")
    far = torch.tensor([0.9, -0.6])  # a poor stand-in: still unbiased, whatever c is
    assert_unbiased(gaussian_estimates(build("soft_cv"), Q, soft_q=far), exact, "soft_cv/far")
    rloo = gaussian_estimates(build("rloo"), Q)
    # the residual f - c is (Q - close) z^2: a fifth of the quadratic term is left to the score
    assert (g.var(0) < 0.25 * rloo.var(0)).all(), (g.var(0), rloo.var(0))


def test_pathwise_needs_a_soft_reward_and_follows_its_exact_gradient() -> None:
    est = build("pathwise", sigma=0.3)
    assert est.pathwise and est.requires == {"soft_reward"}
    assert est.soft_options() == {"sigma": 0.3, "mode": "edges", "cutoff": 1e-3}
    assert_unbiased(gaussian_estimates(est, Q), gaussian_exact(Q), "pathwise")
    logp = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="soft_reward"):
        est.loss(Batch(logp, torch.zeros(2, 3)))


def test_the_surrogate_adds_the_weighted_kl_for_the_elbo_only() -> None:
    torch.manual_seed(0)
    logp = torch.randn(2, 4, requires_grad=True)
    lw = torch.randn(2, 4, requires_grad=True)
    kl = torch.rand(2, 4, requires_grad=True)
    reward = torch.randn(2, 4)
    rloo = build("rloo")
    for w in (0.0, 0.5, 1.0):
        b = Batch(logp, reward)
        torch.testing.assert_close(rloo.surrogate(b, kl, w), rloo.loss(b) + w * kl.mean())
    vimco = build("vimco")  # the multi-sample bound holds the prior: no KL added
    b = Batch(logp, reward, log_prior=lw)
    torch.testing.assert_close(vimco.surrogate(b, kl, 1.0), vimco.loss(b))
    with pytest.raises(ValueError, match="at least 2 samples.*train.samples"):
        rloo.check_samples(1)
    build("reinforce").check_samples(1)


# measured in this test on the Gaussian toy (2,048 inputs x 20 steps per K); the docstring of
# LeaveOneOut quotes these: the mean estimate's projection on the exact gradient, as a fraction
NORMALISED_GAIN = {2: 0.16, 4: 0.19, 16: 0.21}
KEEP_SCALE_GAIN = {2: 0.60, 4: 0.79, 16: 0.94}


@pytest.mark.parametrize("k", [2, 4, 16])
def test_normalised_rloo_is_biased_by_the_documented_amount(k: int) -> None:
    exact = gaussian_exact(Q)

    def gain(**opts) -> float:
        m = gaussian_estimates(build("rloo", **opts), Q, B=2048, K=k, warmup=0, steps=20).mean(0)
        return float(m @ exact / (exact @ exact))

    assert abs(gain() - 1) < 0.03  # plain leave-one-out: unbiased
    assert abs(gain(normalize=True) - NORMALISED_GAIN[k]) < 0.03
    assert abs(gain(normalize=True, keep_scale=True) - KEEP_SCALE_GAIN[k]) < 0.04


def test_the_readme_estimator_is_unbiased() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Swapping in your own gradient estimator"):]
    code = doc_example(section, "from gen3d.estimators import Batch, Estimator, "
                                "leave_one_out_mean, register")
    exec(compile(code, "README.md", "exec"), {"__name__": "gen3d_readme_example"})
    for k in (2, 4):
        g = gaussian_estimates(build("my_estimator"), Q, K=k)
        assert_unbiased(g, gaussian_exact(Q), f"README estimator, K={k}")


def test_an_estimator_that_requires_an_unknown_reward_is_refused_when_built() -> None:
    @register("test_wants_depth")
    class WantsDepth(Estimator):
        requires = frozenset({"reward", "depth"})

    with pytest.raises(ValueError, match="'test_wants_depth'.*'depth'.*one or both of "
                                         r"\['reward', 'soft_reward'\]"):
        build("test_wants_depth")


def test_options_and_batches_an_estimator_cannot_take_are_named():
    import numpy as np
    import pytest
    import torch

    from gen3d.estimators import Batch, build

    for name, kw, words in [("pathwise", {"sigma": "0.5"}, "option sigma must be a number, got '0.5'"),
                            ("rloo", {"normalize": 1}, "option normalize must be true or false"),
                            ("rloo", {"eps": -1.0}, "eps .* must be >= 0"),
                            ("neural", {"hidden": 0}, "hidden .* >= 1"),
                            ("optimal_cv", {"chunk": 0}, "chunk .* >= 1")]:
        with pytest.raises(ValueError, match=words):
            build(name, **kw)
    assert build("pathwise", sigma=1).sigma == 1  # an integer is a number
    logp = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(TypeError, match="Batch.reward must be a torch tensor"):
        Batch(logp, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="the batch is empty"):
        Batch(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3))
