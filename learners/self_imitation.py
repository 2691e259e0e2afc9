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


class SelfImitation:
    """The best mesh parameters sampled so far for each training image, and their reward."""

    def __init__(self, n: int, dim: int, dev, train_std: bool = True):
        self.m = torch.zeros(n, dim, device=dev)
        self.r = torch.full((n,), -float("inf"), device=dev)
        self.train_std = train_std

    def loss(self, model: MeshModel, s, reward: Tensor, idx: np.ndarray) -> Tensor:
        """Update the bests with this micro-batch's samples, then the replay term: minus the
        mean over images and samples of (best reward - mean reward)_+ * log p(best m | z_k)."""
        i = torch.as_tensor(idx, device=reward.device)
        top, arg = reward.max(1)
        for j in (top > self.r[i]).nonzero().flatten().tolist():  # one at a time: an image
            if top[j] > self.r[i[j]]:                             # may be drawn twice
                self.m[i[j]], self.r[i[j]] = s.m[j, arg[j]], top[j]
        adv = (self.r[i] - reward.mean(1)).clamp_min(0)[:, None]  # (b, 1)
        std = None if self.train_std else model.std().detach()
        return -(adv * model.log_prob(self.m[i][:, None], s.mean, std)).mean()

    def state_dict(self) -> dict:
        return {"m": self.m, "r": self.r}

    def load_state_dict(self, st: dict) -> None:
        self.m.copy_(st["m"])
        self.r.copy_(st["r"])
