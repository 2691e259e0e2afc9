"""Self-imitation for the mesh learner (Oh et al., "Self-Imitation Learning", ICML 2018).

Every training image keeps the most likely mesh parameters sampled for it so far (they come
with each step's K samples: no extra renders); each step replays them as an off-policy
score-function term beside the on-policy estimator (``learners.mesh_step``). Biased towards
the best meshes seen, by design.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gen3d.mesh_model import MeshModel
from learners.best_search import SoftLineSearch


class SelfImitation:
    """The best mesh parameters sampled so far for each training image, and their reward.
    With ``search`` > 0 the bests also search on their own, ``search`` renders per image and
    visit (``proposals``, kept when better by ``offer``): Gaussian steps of std ``search_std``
    from each image's best (a (1 + lambda) evolution strategy per image), or, given the soft
    rasteriser's ``oracle``, steps along its gradient at each best
    (``learners.best_search.SoftLineSearch``, with the second view's soft term ``view``).
    Given ``jumps``, affine maps (A (D, D), b (D,)) of the parameters, each visit also renders
    the best moved by each: mirrored front to back (``gen3d.camera_mirrors.depth_flip``, b =
    0), stretched or squashed along the camera's axis (``gen3d.depth_scale``). Given a
    ``prior`` the soft line search climbs the log-likelihood less it. The network then
    imitates what they find."""

    def __init__(self, n: int, dim: int, dev, train_std: bool = True, search: int = 0,
                 search_std: float = 0.01, oracle=None, view=None,
                 jumps: list[tuple[Tensor, Tensor]] = (), prior=None):
        self.m = torch.zeros(n, dim, device=dev)
        self.r = torch.full((n,), -float("inf"), device=dev)
        self.train_std = train_std
        self.search, self.search_std = search, search_std
        self.line = SoftLineSearch(oracle, search, search_std, view, prior) if search and oracle else None
        self.jumps = [(a.to(dev), b.to(dev)) for a, b in jumps]

    @property
    def searches(self) -> bool:
        """Whether each visit renders proposals for the bests."""
        return self.search > 0 or bool(self.jumps)

    def proposals(self, idx: np.ndarray, generator: torch.Generator | None = None,
                  images: Tensor | None = None) -> Tensor:
        """(b, search + one per jump, D) parameters to render for images ``idx`` (b,)
        (``images`` (b,3,H,W) for the soft line search)."""
        i = torch.as_tensor(idx, device=self.m.device)
        best = self.m[i]
        if self.line is not None:
            out = self.line.proposals(best, images, idx)
        else:
            noise = torch.randn(len(idx), self.search, self.m.shape[1], generator=generator,
                                device=self.m.device)
            out = best[:, None] + self.search_std * noise
        for a, b in self.jumps:
            out = torch.cat([out, (best @ a.T + b)[:, None]], 1)
        return out

    def offer(self, idx: np.ndarray, m: Tensor, reward: Tensor) -> None:
        """Keep, per image of ``idx`` (b,), the most likely of parameters ``m`` (b, N, D) with
        rewards ``reward`` (b, N) where it beats the image's best."""
        i = torch.as_tensor(idx, device=reward.device)
        top, arg = reward.max(1)
        for j in (top > self.r[i]).nonzero().flatten().tolist():  # one at a time: an image
            if top[j] > self.r[i[j]]:                             # may be drawn twice
                self.m[i[j]], self.r[i[j]] = m[j, arg[j]], top[j]

    def loss(self, model: MeshModel, s, reward: Tensor, idx: np.ndarray,
             frame: tuple | None = None) -> Tensor:
        """Update the bests with this micro-batch's samples, then the replay term: minus the
        mean over images and samples of (best reward - mean reward)_+ * log p(best m | z_k).
        ``frame`` (symmetries, g): the samples were drawn for images under elements g (b,) of
        ``gen3d.image_symmetries.ImageSymmetries``; the bests are kept in the images' own
        frame."""
        i = torch.as_tensor(idx, device=reward.device)
        if frame is None:
            self.offer(idx, s.m, reward)
            best = self.m[i]
        else:
            sym, g = frame
            self.offer(idx, sym.back(s.m, g), reward)
            best = sym.to_frame(self.m[i], g)
        adv = (self.r[i] - reward.mean(1)).clamp_min(0)[:, None]  # (b, 1)
        std = None if self.train_std else model.std().detach()
        return -(adv * model.log_prob(best[:, None], s.mean, std)).mean()

    def state_dict(self) -> dict:
        return {"m": self.m, "r": self.r}

    def load_state_dict(self, st: dict) -> None:
        self.m.copy_(st["m"])
        self.r.copy_(st["r"])
