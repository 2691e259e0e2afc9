"""The main job's config: what ``configs/primitives.yaml`` and its kind describe, validated
field by field (``gen3d.fields``) and across sections (``MeshRunConfig.__post_init__``). The
loop that runs it is ``learners.mesh_train``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from gen3d import estimators
from gen3d.data import mesh_images
from gen3d.data.mesh_images import MeshImageConfig
from gen3d.fields import (
    Above,
    AtLeast,
    AtMost,
    Below,
    DeviceStr,
    NonEmptyStr,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
)
from gen3d.mesh_model import MeshModelConfig
from learners.mesh_refine import RefineConfig
from workers.cluster import RayConfig
from workers.pool import PoolConfig


@dataclass
class EstimatorConfig:
    name: str = "rloo"
    """Gradient estimator by name (``gen3d.estimators.available()``; yours once registered)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Its constructor's keyword arguments."""
    lr: PosFloat = 1e-3
    """Learning rate of the estimator's own parameters (neural baselines, control variates)."""

    def __post_init__(self):
        if self.name not in estimators.available():
            raise ValueError(f"name: unknown estimator {self.name!r}; choose one of "
                             f"{estimators.available()} or register your own (gen3d.estimators) and "
                             "name its module with --import")


@dataclass
class MeshTrainConfig:
    steps: PosInt = 6000
    """Optimiser steps."""
    batch: PosInt = 32
    """Images per step (B)."""
    samples: PosInt = 8
    """Meshes sampled per image (K): B*K renders a step."""
    microbatches: PosInt = 2
    """A step's images go to the workers in this many parts, so rendering overlaps learning."""
    lr: NonNegFloat = 1e-3
    """Adam learning rate of the model (0 holds the network fixed, e.g. to compare estimators on it)."""
    weight_decay: NonNegFloat = 0.0
    """AdamW's decoupled weight decay: holds back the random walk that score-function noise
    drives in the weights, which otherwise saturates the posterior and the LSTM. Weight
    matrices and kernels only (see ``decay_groups``)."""
    grad_clip: NonNegFloat = 0.0
    """Clip the model's gradient norm to this (0: off)."""
    lr_final: NonNegFloat = 1.0
    """The learning rate falls linearly to this fraction of ``lr`` over ``steps`` or, with
    ``time_limit_s``, by the clock once the run falls behind the pace that limit needs
    (``mesh_optim.run_fraction``): a run stopped by the clock still ends on its smallest
    steps, and one that keeps its pace is scheduled by its steps alone (reproducible)."""
    rollback_nats: NonNegFloat = 0.0
    """If the smoothed training ELBO falls this far below its best, go back to the last good
    snapshot (taken every ``checkpoint_every`` steps) and halve the learning rate (0: off).
    A score-function step now and then throws the model into a region where every sample
    renders badly and no signal leads back."""
    adam_clip: NonNegFloat = 0.0
    """Clip each gradient element to this many of Adam's running RMS for it (0: off). A rare
    score-function spike otherwise moves a weight up to ~30 learning rates in one step, which
    is what saturated the posterior and froze every image onto one mesh."""
    sigma: PosFloat = 0.1
    """Std of the Gaussian pixel likelihood (images in [0,1])."""
    kl_warmup_steps: NonNegInt = 0
    """The KL's weight in the loss rises linearly from 0 to 1 over these steps (0: always 1):
    its exact gradient otherwise collapses q(z|x) onto the prior before the noisy
    score-function signal teaches the decoder to use z. Logged ELBOs always weigh it 1."""
    self_imitation: NonNegFloat = 0.0
    """Weight of self-imitation (Oh et al., ICML 2018; 0: off): each training image keeps the
    most likely mesh parameters sampled for it so far, and that sample is replayed as an
    off-policy score-function term whose advantage is how far its reward lies above the mean of
    the image's current samples (clipped at 0). Renders nothing extra; biased towards the best
    meshes seen, as per-image refinement is."""
    self_imitation_std: bool = True
    """Whether the replay term trains the sampling std of p(m | z) too. It pulls that std
    towards the distance of the replayed bests from the current mean, which grows as the
    network moves on from where they were sampled; off, the on-policy estimator alone sets it."""
    self_imitation_search: NonNegInt = 0
    """With self-imitation: each visit also renders this many Gaussian steps from the image's
    best and keeps the best of them when it beats it (0: off), so the bests search on their own
    (a (1 + lambda) evolution strategy per image) and the network imitates what they find."""
    self_imitation_search_std: PosFloat = 0.01
    """Std of those steps, in the mesh parameters' units."""
    self_imitation_search_soft: bool = False
    """The search steps go from each best along the soft rasteriser's gradient of its
    log-likelihood (one soft render and backward per image and visit), at RMS sizes
    ``self_imitation_search_std`` * 2^(j - J/2) for j < J: GL's rewards pick the step
    (``learners.best_search.SoftLineSearch``)."""
    self_imitation_search_views: bool = False
    """With ``data.second_view`` and the soft line search: the direction climbs the second
    view's soft silhouette term too (``learners.pathwise.ViewOracle``), as the GL reward it
    proposes for does. In a 3,000-step probe it added a little depth but cost 0.03 front IoU
    and turned cubes and pyramids worse (``benchmarks/RESULTS.md``, fifteenth session)."""
    self_imitation_search_flip: bool = False
    """With self-imitation: each visit also renders each image's best mirrored front to back
    about its centre (``gen3d.camera_mirrors.depth_flip``) and keeps it when GL finds it more
    likely: a jump no small step makes, for objects whose silhouette hardly tells their front
    from their back (a pyramid's apex towards the camera or away), which a second view
    (``data.second_view``) or the colours of the sides then decide."""
    self_imitation_search_depth: Annotated[float, AtLeast(0)] = 0.0
    """With self-imitation: each visit also renders each image's best stretched by this
    factor along the camera's axis and squashed by it, about its centre
    (``gen3d.depth_scale``), and keeps either when GL finds it more likely: one view's reward
    sees depth only through perspective and shading, and no small step scales it. Needs
    ``model.shape: sh`` without rotation. 0: off; otherwise above 1."""
    mirror_reward: bool = False
    """With ``model.mirror_std``: the mirror prior is also taken off every rendered sample's
    and every best's GL reward (each image's shapes scored about the plane its mean or best
    is most nearly symmetric about), so the estimator and the bests' search prefer the
    symmetric shape among those the image likes alike, and the bests' soft line search climbs
    the log-likelihood less the prior; the logged rewards and bound include it."""
    mirror_images: bool = False
    """Show each training image as it is, mirrored left-right, up-down, or turned half about
    the camera's axis, at random (``gen3d.camera_mirrors``: symmetries under which the mesh
    parameters map exactly): the network answers in the mirror's frame and its answer is
    mapped back before it is rendered against the image, so rewards and self-imitation's bests
    are those of the image itself; the network sees 4 times the training images. GL rewards
    only (the soft renders take the image's own frame)."""
    colour_orders: bool = False
    """Show each training image with its colour channels in one of their six orders, at random
    (``gen3d.image_symmetries``: under grey lights a swap of the channels is a swap of the
    albedos'), mapped back as ``mirror_images`` does; with it too, 24 frames in all. GL rewards
    only."""
    second_view_weight: NonNegFloat = 1.0
    """Weight of the second view's silhouette log-likelihood in each GL reward, beside the
    image's (``data.second_view``; unused without it)."""
    soft_mean: NonNegFloat = 0.0
    """Weight of a pathwise term beside the estimator (0: off): the soft rasteriser's
    log-likelihood of each image's mean mesh, differentiated through the soft render
    (``learners.soft_mean``); one soft render per image and step."""
    soft_mean_until: Annotated[float, Above(0), AtMost(1)] = 1.0
    """The term's weight falls linearly from ``soft_mean`` to 0 over this fraction of the run
    (the learning rate's clock), and no soft render is made after it: the soft render is not
    GL's, so its bias is left to the early steps, where its low variance speeds learning."""
    coarse_to_fine: Annotated[float, AtLeast(0), Below(1)] = 0.0
    """Coarse to fine (0: off): the first this fraction of the run (the learning rate's clock)
    is cut into equal parts, one per degree from ``coarse_degree`` to ``model.shape_degree``,
    and in each the shape's harmonics go up to that degree only (progressive conditioning,
    after Monnier et al., ECCV 2022): the low degrees, which set a shape's pose and depth, are
    found before the details can settle around them."""
    coarse_degree: NonNegInt = 1
    """The first degree of ``coarse_to_fine``."""
    std_final: PosFloat = 1.0
    """The sampling std of p(m | z) is multiplied by a factor that falls linearly from 1 to
    this over the run (the learning rate's clock; 1: off). Late in a run each image's mean is
    near its optimum, where a narrower search estimates the local gradient more reliably."""
    ema: Annotated[float, AtLeast(0), Below(1)] = 0.0
    """Decay of an exponential moving average of the model's weights (Polyak averaging; 0:
    off), kept beside the trained weights and used for scoring: it averages away the
    score-function noise of the last steps. The report keeps the raw weights' scores too."""
    time_limit_s: NonNegFloat = 0.0
    """Stop training after this many seconds of it (0: no limit; a resumed run counts the
    time before it), then score as usual."""
    torch_threads: PosInt = 1
    """Threads torch may use in the learner (the rest of the CPUs render)."""
    log_every: PosInt = 25
    """Scalars to TensorBoard every this many steps."""
    image_every: PosInt = 500
    """Input | reconstruction grids every this many steps."""
    checkpoint_every: PosInt = 250
    """Atomic checkpoint every this many steps (and at the end)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.self_imitation_search and not self.self_imitation:
            raise ValueError(f"self_imitation_search: {self.self_imitation_search} moves "
                             "self-imitation's bests, which are off: set train.self_imitation > 0")
        for name in ("mirror_images", "colour_orders"):
            if getattr(self, name) and self.soft_mean:
                raise ValueError(f"{name}: the soft-mean term renders in the image's own "
                                 f"frame; set train.soft_mean: 0 or train.{name}: false")
        if self.self_imitation_search_flip and not self.self_imitation:
            raise ValueError("self_imitation_search_flip: it moves self-imitation's bests, "
                             "which are off: set train.self_imitation > 0")
        if self.self_imitation_search_depth and not (self.self_imitation
                                                     and self.self_imitation_search_depth > 1):
            raise ValueError(f"self_imitation_search_depth: {self.self_imitation_search_depth} "
                             "stretches and squashes self-imitation's bests by a factor above 1 "
                             "(e.g. 1.2); needs train.self_imitation > 0")
        if self.self_imitation_search_views and not self.self_imitation_search_soft:
            raise ValueError("self_imitation_search_views: it turns the soft line search's "
                             "direction, which is off: set train.self_imitation_search_soft")
        if self.self_imitation_search_soft and not self.self_imitation_search:
            raise ValueError("self_imitation_search_soft: the soft line search renders "
                             "self_imitation_search steps, which is 0: set it (e.g. 8)")

    @property
    def renders_per_step(self) -> int:
        """GL renders a step asks for: K samples per image, and the bests' search steps (a
        search without self-imitation is refused above)."""
        return self.batch * (self.samples + self.self_imitation_search
                             + int(self.self_imitation_search_flip)
                             + 2 * int(self.self_imitation_search_depth > 0))



TrainConfig = MeshTrainConfig  # the shorter name, for existing imports


@dataclass
class MeshEvalConfig:
    n_test: NonNegInt = 0
    """Held-out images to score at the end (0: all)."""
    chamfer_points: PosInt = 2000
    """Surface points per mesh for the Chamfer distance."""
    pose_rotations: NonNegInt = 3000
    """Rotations tried when reading each held-out mesh's kind and turn off its shape
    (``gen3d.mesh_pose``: ``rot_err_mesh_deg``, ``kind_read``, and ``rot_err_kind_deg``,
    the turn read given the true kind); 0: not read. Spacing about
    8 degrees at 3,000; the tables take ~5 s to build."""
    n_obj: NonNegInt = 6
    """Inferred meshes written as .obj files."""
    unseen_kinds: list[str] = field(default_factory=lambda: list(mesh_images.UNSEEN_KINDS))
    """Kinds never trained on, made by the same image pipeline, scored as ``scores_unseen``."""
    n_unseen: NonNegInt = 150
    """Images of those kinds to score (and as many to fit their sphere floors on; 0: off)."""
    curve_images: NonNegInt = 64
    """Held-out images scored every ``train.image_every`` steps for the IoU-against-wall-time
    curve (0: off)."""
    refine: RefineConfig = field(default_factory=RefineConfig)
    """Per-image refinement of the inferred meshes through the renderer before scoring
    (``learners.mesh_refine``); the report keeps the inference network's own scores too."""


EvalConfig = MeshEvalConfig  # the shorter name, for existing imports


@dataclass
class MeshRunConfig:
    name: NonEmptyStr = "primitives"
    """Run name: everything goes to ``<out_dir>/<name>/``."""
    out_dir: NonEmptyStr = "runs"
    """Parent directory of runs."""
    seed: NonNegInt = 0
    """Seed of the model's initialisation, batches and samples."""
    device: DeviceStr = "auto"
    """Torch device of the learner: "auto" (the GPU when torch can use one), "cpu", "cuda", "cuda:N"."""
    data: MeshImageConfig = field(default_factory=MeshImageConfig)
    model: MeshModelConfig = field(default_factory=MeshModelConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    resume_keys: ClassVar[tuple[str, ...]] = ("model", "data.size")
    """What a checkpoint must share with the config to resume: the encoder's size is the image's."""
    resume_free: ClassVar[tuple[str, ...]] = ("model.infer_mirrors", "model.infer_colour_orders")
    """Keys under those that may differ: how the network's answer is read, not its weights (a
    finished run resumed at its last step with it changed is scored again)."""

    @property
    def renders_per_step(self) -> int:
        """GL renders a step asks for, the second view's included (``data.second_view``
        renders each one again)."""
        return self.train.renders_per_step * (2 if self.data.second_view else 1)

    def __post_init__(self):
        if self.train.mirror_images and self.model.rotation_hypotheses:
            raise ValueError("train.mirror_images: model.rotation_hypotheses have no mirror "
                             "map (gen3d.camera_mirrors); set one of them off")
        m = self.model
        if self.train.coarse_to_fine and not (m.shape == "sh" and m.shape_symmetry != "mirror"
                                              and self.train.coarse_degree < m.shape_degree):
            raise ValueError(f"train.coarse_to_fine: needs model.shape: sh, model.shape_symmetry "
                             f"not mirror, and train.coarse_degree ({self.train.coarse_degree}) "
                             f"below model.shape_degree ({m.shape_degree}); got shape {m.shape!r}, "
                             f"shape_symmetry {m.shape_symmetry!r}")
        if self.train.mirror_reward and not m.mirror_std:
            raise ValueError("train.mirror_reward: takes model.mirror_std's prior off the "
                             "rewards, and it is 0: set model.mirror_std (e.g. 0.02)")
        if self.train.self_imitation_search_depth and not (
                m.shape == "sh" and m.shape_symmetry == "none" and not m.rotation):
            raise ValueError("train.self_imitation_search_depth: scales the camera-frame shape's "
                             f"harmonics, so it needs model.shape: sh, shape_symmetry: none and "
                             f"rotation: false; got shape {m.shape!r}, shape_symmetry "
                             f"{m.shape_symmetry!r}, rotation {m.rotation}")
        if self.train.self_imitation_search_views and not self.data.second_view:
            raise ValueError("train.self_imitation_search_views: it climbs the second view, "
                             "which is off: set data.second_view (e.g. 90)")
