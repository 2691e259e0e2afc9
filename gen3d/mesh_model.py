"""The sequential generative model for meshes, with its inference network.

Generative: z_t ~ N(0, I) (10 per step), s_t = LSTM(s_{t-1}, z_t) (300 hidden), u = sum_t
write(s_t) is the mean of a Gaussian p(m | z) = N(u, diag(sigma_m^2)) over mesh parameters m
in an unconstrained space, and ``decode`` maps m to the renderer's action (162 ray lengths,
pose, per-vertex colours). The projection is the black-box OpenGL renderer.

Inference: q(z_t | x, s_{t-1}) from a conv encoder of the image and the LSTM state.

Gradients (see ``sample``): z is reparameterised, so the KL to the prior is pathwise; the
reconstruction term reaches every parameter (inference and generative) through the score of
log p(m | z), with m sampled and detached: the renderer is never differentiated.

Mesh parameterisations (``MeshModelConfig.shape`` / ``colour``):
- ``sh``: ray lengths ``r0 * exp(Y @ c)`` with Y the real spherical harmonics up to a stated
  degree at the 162 rays (smooth, few dimensions), colours ``sigmoid(Y_c @ c_rgb)``;
- ``raw``: one log-length per ray, one colour logit per vertex and channel;
- ``palette`` (colours): a few colours per mesh and, per vertex, a softmax over them of
  spherical-harmonic logits: sharp boundaries between flat regions, as on a primitive's sides.

With ``rotation`` the shape and colours are in the object's own frame and a rotation (an
axis-angle vector in the ball of radius pi) turns them to the camera's; with
``rotation_hypotheses`` that rotation turns one of a fixed set, chosen by sampled scores
(``gen3d.pose_hypotheses``).

With ``read_colours`` the inferred mesh's colours, where the camera sees it, are read from the
image at each vertex's projection (``gen3d.image_colours``): q(c | x, m), a point estimate of
six distinct side colours that a 10-dimensional z cannot carry. Training samples render the
decoder's colours: read colours as they are would paint a mesh that overhangs the object with
the background's black, and the silhouette would stop pulling it in (held-out IoU 0.80 against
0.91 in one full run, benchmarks/RESULTS.md); ``train_colours: read`` paints them instead with
a smooth fit to the colours read where the mesh lands on the object (``train_actions``). The
decoder's colours are fit to the colours read (squared error over 2 s^2, ``colour_prior_std``
= s): an exact gradient the score function lacks, to the write head only (z is left to the
shape), outside the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from gen3d import geometry as geo
from gen3d.fields import FiniteFloat, NonNegFloat, NonNegInt, PosFloat, PosInt
from gen3d.image_colours import ImageColours, colour_fit, fit_albedo
from gen3d.image_symmetries import ImageSymmetries, group
from gen3d.mesh_decoder import MeshDecoder
from gen3d.mirror_prior import MirrorPrior

LOG_2PI = math.log(2 * math.pi)


@dataclass
class MeshModelConfig:
    T: PosInt = 1
    """Generative steps (the paper's mesh experiments use 1)."""
    z_dim: PosInt = 10
    """Gaussian latents per step."""
    hidden: PosInt = 300
    """LSTM hidden units."""
    channels: PosInt = 32
    """Width of the first conv layer of the image encoder (doubles per layer)."""
    shape: Literal["sh", "raw"] = "sh"
    """Ray lengths from spherical harmonics (``sh``) or one per ray (``raw``)."""
    shape_degree: NonNegInt = 4
    """Highest spherical-harmonic degree of the ray lengths (``sh``): (d+1)^2 coefficients."""
    shape_symmetry: Literal["none", "mirror"] = "none"
    """``mirror``: object-frame shapes even in x and in z (``geometry.mirror_sph_harm``; 16
    coefficients at degree 6), as every primitive kind is in its own frame. Spherical-harmonic
    shapes of every degree are closed under rotation, so they absorb any rotation and
    ``rotation`` learns nothing; a mirror-symmetric shape cannot hold a tilted cone, so the
    rotation must. Needs ``shape: sh`` and ``rotation: true``."""
    colour: Literal["sh", "raw", "uniform", "palette"] = "sh"
    """Per-vertex colours from spherical harmonics, one per vertex, one per mesh, or a
    palette with a per-vertex assignment (``palette``)."""
    colour_degree: NonNegInt = 2
    """Highest spherical-harmonic degree of the colours (``sh``) or of the palette's
    assignment logits (``palette``)."""
    colour_at: Literal["rays", "normals"] = "rays"
    """Where the colour harmonics (``sh``, ``palette``) are read: at each vertex's ray (a
    colour field over directions from the centre) or at its surface normal (a colour per
    surface direction: every vertex of a flat side takes that side's one colour, a crease
    between sides is a jump). With ``normals`` a primitive's side colours are held exactly by
    its own facets, so the image's colour pattern is explained by the shape's facets where
    they are, not painted onto any shape."""
    train_colours: Literal["decoded", "read"] = "decoded"
    """The colours training renders use: the decoder's (``decoded``), or ``read`` from the
    image for each sample's own shape: the albedo at its vertices that face the camera and land
    on the object, fit by the colour harmonics (``colour_at``) and painted on every vertex. A
    sample then scores by whether its shape lets one smooth colour function explain the image
    (with ``colour_at: normals``: whether its facets hold the sides' colours where they are),
    not by how well the network guessed the colours; a vertex over the background takes the
    fit's colour, not the background's black, so the silhouette still pulls. Needs
    ``read_colours`` and ``colour: sh``."""
    colour_fit_shape: bool = False
    """With ``colour_at: normals`` and ``read_colours``: the decoder's fit to the colours read
    also moves the shape (through its normals), an exact gradient towards facets that hold the
    colours read; off, the fit moves the colours only."""
    palette_size: PosInt = 6
    """Colours in the palette (``palette``): a primitive has up to 6 sides."""
    palette_sharpness: PosFloat = 5.0
    """Factor on the palette's assignment logits: how sharp its boundaries are at a given
    spread of the parameters."""
    rotation: bool = False
    """Also infer a rotation, with the shape and colours in the object's frame. Off by
    default: for a mesh on rays from its centre, shape in the camera frame already covers the
    silhouette, and a redundant dimension adds score-function variance; the rotation is what
    makes the object's orientation an output (scored as ``rot_err_deg``)."""
    rotation_hypotheses: NonNegInt = 0
    """With ``rotation``: the rotation is one of this many fixed rotations spread over SO(3),
    the one whose score (one more Gaussian parameter each) is highest, turned by the inferred
    residual rotation (``gen3d.pose_hypotheses``): a search that can jump between poses. 0:
    the residual alone, a local search."""
    shape_templates: NonNegInt = 0
    """With ``rotation``: this many learned object-frame shapes shared by every image; each
    image's mean shape is pulled to its nearest template by a Gaussian prior of std
    ``template_std`` on the shape parameters (an exact gradient outside the bound, like the
    colour fit), so that a turned object is fit by the rotation rather than by a turned
    shape. 0: off."""
    template_std: PosFloat = 0.05
    """Std of that prior, in the shape parameters' units (``shape_templates``)."""
    mirror_std: NonNegFloat = 0.0
    """Std of a prior that each image's mean shape is mirror symmetric about some plane
    through its centre (``gen3d.mirror_prior``): what the camera sees of one side says what
    the hidden side is. In the shape harmonics' units (log ray length, L2 over the sphere);
    an exact gradient outside the bound, like the colour fit. 0: off."""
    feedback: NonNegInt = 0
    """Correction passes with the renderer in the loop: the mean mesh is rendered (a black
    box, not differentiated) and a second encoder, of the image beside that render, adds a
    correction to the mean of p(m | z). Needs ``attach_renderer``. 0: off."""
    feedback_std: NonNegFloat = 0.0
    """Std of a Gaussian prior on that correction (an exact gradient, to the feedback encoder
    only, outside the bound): a small correction leaves the first pass a whole answer, which
    the feedback refines. 0: no prior."""
    init_std_hypotheses: PosFloat = 1.0
    """Initial std of the hypotheses' scores (``rotation_hypotheses``): at 1, with the write
    head at zero, every sample picks a hypothesis uniformly at random."""
    read_colours: bool = False
    """Reconstructions take the colours of the vertices facing the camera from the image
    (albedo read where each projects), and the decoder's colours are fit to them in training
    (see the module's docstring)."""
    infer_mirrors: bool = False
    """The inferred mesh (``infer``) is the mean of the network's answers to the image and to
    its three camera mirrors (``gen3d.camera_mirrors``), each mapped back to the image's frame:
    four looks, four encoder passes, no render. Training samples are not affected; a network
    trained with ``train.mirror_images`` has seen the mirrored images."""
    infer_colour_orders: bool = False
    """The same over the image's six orders of its colour channels (``gen3d.image_symmetries``:
    the lights are grey, so a swap of the channels is a swap of the albedos' channels), each
    answer's colours put back in order: with ``infer_mirrors``, 24 looks. A network trained with
    ``train.colour_orders`` has seen the swapped images."""
    colour_prior_std: PosFloat = 0.1
    """Scale s of that fit (``read_colours``): squared error over 2 s^2 per seen vertex and
    channel."""
    base_radius: PosFloat = 0.6
    """Ray length of the initial sphere."""
    init_std: PosFloat = 0.1
    """Initial std of p(m | z) in the unconstrained space."""
    init_std_colour: NonNegFloat = 0.0
    """Initial std of the colour parameters (0: ``init_std``). A search as narrow as the
    shape's moves a colour logit by hundredths: every mesh stays one averaged grey."""
    init_std_rotation: NonNegFloat = 0.0
    """Initial std of the rotation (radians; 0: ``init_std``)."""
    init_std_by_degree: list[PosFloat] = field(default_factory=list)
    """Initial std of the shape's harmonics of degree 0, 1, ... in turn (degrees past the
    list: ``init_std``). The low degrees hold a shape's size and which way it reaches (a
    pyramid's apex); a wider search there explores them faster than the fine detail."""
    z_bound: PosFloat = 4.0
    """Posterior means are squashed into (-z_bound, z_bound) (prior std units)."""
    init_log_sd_z: FiniteFloat = -2.0
    """Initial log-std of q(z | x): a narrow posterior lets the decoder learn to use z before
    the KL, whose gradient is exact while the reconstruction's is noisy, pulls q to the prior."""
    min_std: PosFloat = 0.005
    """Floor of that std: keeps score-function gradients bounded."""

    def __post_init__(self):
        if self.T < 1 or self.z_dim < 1 or self.hidden < 1:
            raise ValueError("T, z_dim and hidden must be >= 1")
        for name in ("init_std", "init_std_colour", "init_std_rotation", "init_std_hypotheses"):
            v = getattr(self, name)
            if v and not self.min_std <= v:
                raise ValueError(f"{name}: need min_std ({self.min_std}) <= {name}, got {v}")
        if not 0 < self.min_std <= self.init_std:
            raise ValueError("need 0 < min_std <= init_std")
        self._check_std_by_degree()
        if self.shape_symmetry == "mirror" and not (self.shape == "sh" and self.rotation):
            raise ValueError("shape_symmetry: 'mirror' needs shape: sh and rotation: true (the "
                             f"rotation carries the pose), got shape {self.shape!r}, rotation "
                             f"{self.rotation}")
        if self.shape_templates and not (self.rotation and self.shape == "sh"):
            raise ValueError(f"shape_templates: {self.shape_templates} needs rotation: true and "
                             "shape: sh (templates are object-frame harmonic shapes)")
        if self.mirror_std and not (self.shape == "sh" and self.shape_symmetry == "none"):
            raise ValueError(f"mirror_std: {self.mirror_std} mirrors the shape's harmonics, so it "
                             f"needs shape: sh and shape_symmetry: none, got shape {self.shape!r}, "
                             f"shape_symmetry {self.shape_symmetry!r}")
        if self.rotation_hypotheses and not self.rotation:
            raise ValueError(f"rotation_hypotheses: {self.rotation_hypotheses} needs rotation: "
                             "true (the hypotheses are rotations)")
        if self.infer_mirrors and self.rotation_hypotheses:
            raise ValueError("infer_mirrors: rotation_hypotheses have no mirror map "
                             "(gen3d.camera_mirrors); set one of them off")
        if self.colour_at == "normals" and self.colour not in ("sh", "palette"):
            raise ValueError(f"colour_at: 'normals' reads the colour harmonics at the normals, "
                             f"so it needs colour: sh or palette, got colour {self.colour!r}")
        if self.train_colours == "read" and not (self.read_colours and self.colour == "sh"):
            raise ValueError(f"train_colours: 'read' fits the colours read by the colour "
                             f"harmonics, so it needs read_colours: true and colour: sh, got "
                             f"read_colours {self.read_colours}, colour {self.colour!r}")
        if self.colour_fit_shape and not (self.colour_at == "normals" and self.read_colours):
            raise ValueError("colour_fit_shape: needs colour_at: normals and read_colours: true "
                             "(the fit reaches the shape through the normals)")
        if self.palette_size < 1 or self.palette_sharpness <= 0:
            raise ValueError(f"palette_size must be >= 1 and palette_sharpness > 0, got "
                             f"{self.palette_size} and {self.palette_sharpness}")

    def _check_std_by_degree(self) -> None:
        stds = self.init_std_by_degree
        if not stds:
            return
        if self.shape != "sh" or self.shape_symmetry == "mirror" or len(stds) > self.shape_degree + 1:
            raise ValueError(f"init_std_by_degree: needs shape: sh with all harmonics (not "
                             f"shape_symmetry: mirror) and at most shape_degree + 1 = "
                             f"{self.shape_degree + 1} entries, got {len(stds)} (shape "
                             f"{self.shape!r}, shape_symmetry {self.shape_symmetry!r})")
        bad = [v for v in stds if not (math.isfinite(v) and v >= self.min_std)]
        if bad:
            raise ValueError(f"init_std_by_degree: every entry must be finite and >= min_std "
                             f"({self.min_std}), got {bad}")


class Encoder(nn.Module):
    """Conv encoder of (B,3,H,W) images in [0,1] to (B, F) features; H, W multiples of 16."""

    def __init__(self, size: int, channels: int, out: int = 256, in_channels: int = 3):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c, 4, 2, 1), nn.ELU(), nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ELU(),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.ELU(), nn.Conv2d(4 * c, 8 * c, 4, 2, 1), nn.ELU(),
            nn.Flatten(), nn.Linear(8 * c * (size // 16) ** 2, out), nn.ELU())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x - 0.5)


@dataclass
class Samples:
    """K samples per image, and what the estimators and the bound need of them."""

    m: Tensor          # (B,K,D) mesh parameters, detached (what was rendered)
    m_rsample: Tensor  # (B,K,D) the same, reparameterised (pathwise grad; for LAX/RELAX)
    logp: Tensor       # (B,K) log p(m | z), grad to every parameter; m detached
    kl: Tensor         # (B,K) sum_t KL(q(z_t|.) || N(0,I)), pathwise
    log_pz: Tensor     # (B,K) log p(z) of the sampled z (for multi-sample bounds)
    log_qz: Tensor     # (B,K) log q(z | x)
    features: Tensor   # (B,F) detached image features
    noise: Tensor      # (B,K,D) the standard-normal noise of m
    actions: Tensor    # (B,K,ACTION_DIM) renderer actions, detached
    mean: Tensor       # (B,K,D) each sample's mean of p(m | z), with grad (to score other m)
    colour_fit: Tensor | None = None  # (B,) the decoder's colours' fit to those read (read_colours)
    shape_prior: Tensor | None = None  # (B,) -log prior of the mean shape (templates, mirror)
    correction_prior: Tensor | None = None  # (B,) -log prior of the feedback's correction


class MeshModel(nn.Module):
    def __init__(self, cfg: MeshModelConfig, image_size: int = 64):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image size must be a multiple of 16, got {image_size}")
        self.cfg = cfg
        self.feature_dim = 256
        self.encoder = Encoder(image_size, cfg.channels, self.feature_dim)
        self.decoder = MeshDecoder(cfg)
        self.q = nn.Linear(self.feature_dim + cfg.hidden, 2 * cfg.z_dim)
        with torch.no_grad():  # start with a narrow posterior: z carries the image, not noise
            self.q.bias[cfg.z_dim:].fill_(cfg.init_log_sd_z)
        self.lstm = nn.LSTMCell(cfg.z_dim, cfg.hidden)
        self.write = nn.Linear(cfg.hidden, self.decoder.dim)
        self.reader = ImageColours(image_size) if cfg.read_colours else None
        self.symmetries = group(self.decoder, cfg.infer_mirrors, cfg.infer_colour_orders)
        n_shape = self.decoder.slices["shape"].stop - self.decoder.slices["shape"].start
        self.templates = (nn.Parameter(0.05 * torch.randn(cfg.shape_templates, n_shape))
                          if cfg.shape_templates else None)
        self.mirror_prior = MirrorPrior(cfg.shape_degree, cfg.mirror_std) if cfg.mirror_std else None
        nn.init.zeros_(self.write.weight)  # start at the base sphere, grey, centred
        nn.init.zeros_(self.write.bias)
        if cfg.feedback:  # the image and the render of the current mean, side by side
            self.fb_encoder = Encoder(image_size, cfg.channels, self.feature_dim, in_channels=6)
            self.fb_head = nn.Linear(self.feature_dim, self.decoder.dim)
            nn.init.zeros_(self.fb_head.weight)  # no correction at first
            nn.init.zeros_(self.fb_head.bias)
        self.renderer: Callable[[Tensor], Tensor] | None = None
        std = torch.full((self.decoder.dim,), cfg.init_std)
        for degree, v in enumerate(cfg.init_std_by_degree):
            std[self.decoder.slices["shape"].start + np.arange(degree**2, (degree + 1) ** 2)] = v
        for part, v in (("colour", cfg.init_std_colour), ("rotation", cfg.init_std_rotation),
                        ("hypotheses", cfg.init_std_hypotheses)):
            if v:
                std[self.decoder.slices[part]] = v
        self.log_std = nn.Parameter(torch.log(std))
        # a learner's schedule narrows the search without fighting the learned log-std; set
        # every step, so it is not saved
        self.register_buffer("std_scale", torch.ones(()), persistent=False)

    def attach_renderer(self, render: Callable[[Tensor], Tensor] | None) -> None:
        """The renderer of the ``feedback`` passes: actions (B, A) -> images (B,3,H,W) in
        [0,1], as the data were made. Not saved with the weights."""
        self.renderer = render

    def correction(self, images: Tensor, u: Tensor) -> Tensor:
        """The feedback passes' summed correction (B, D) to mean parameters u (B, D) of
        ``images``: each pass renders the corrected mean so far (no gradient through the
        render or u) and adds what the feedback encoder reads off image and render."""
        if self.renderer is None:
            raise RuntimeError("model.feedback needs a renderer: call model.attach_renderer(...) "
                               "(learners.mesh_eval.attach_renderer does it with a MeshRenderer)")
        delta = torch.zeros_like(u)
        for _ in range(self.cfg.feedback):
            seen = self.renderer(self.to_actions((u + delta).detach(), images))
            delta = delta + self.fb_head(self.fb_encoder(torch.cat([images, seen], 1)))
        return delta

    def std(self) -> Tensor:
        return self.std_scale * (self.cfg.min_std + torch.exp(self.log_std))

    def _unroll(self, feat: Tensor, eps_z: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """feat (N,F); eps_z (N,T,z) or None for the posterior mean. Returns mean of m (N,D),
        KL (N), log p(z) (N), log q(z) (N), and the mean of m again with a gradient to the
        write head only (N,D)."""
        n = len(feat)
        h = feat.new_zeros(n, self.cfg.hidden)
        c = torch.zeros_like(h)
        u = feat.new_zeros(n, self.decoder.dim)
        u_head = torch.zeros_like(u)
        kl = feat.new_zeros(n)
        lpz = feat.new_zeros(n)
        lqz = feat.new_zeros(n)
        for t in range(self.cfg.T):
            mu, log_sd = self.q(torch.cat([feat, h], 1)).chunk(2, 1)
            # bounded posterior: the score-function noise in the encoder's gradient cannot
            # random-walk z (and the KL) off to thousands of nats
            mu = self.cfg.z_bound * torch.tanh(mu / self.cfg.z_bound)
            log_sd = log_sd.clamp(-6, 1)
            e = torch.zeros_like(mu) if eps_z is None else eps_z[:, t]
            z = mu + torch.exp(log_sd) * e
            kl = kl + 0.5 * (mu**2 + torch.exp(2 * log_sd) - 1 - 2 * log_sd).sum(1)
            lpz = lpz - 0.5 * (z**2 + LOG_2PI).sum(1)
            lqz = lqz - 0.5 * (e**2 + LOG_2PI).sum(1) - log_sd.sum(1)
            h, c = self.lstm(z, (h, c))
            u = u + self.write(h)
            u_head = u_head + self.write(h.detach())
        return u, kl, lpz, lqz, u_head

    def sample(self, images: Tensor, k: int, noise: Tensor | None = None,
               generator: torch.Generator | None = None, paint: bool = True) -> Samples:
        """K samples of mesh parameters for each image (B,3,H,W) in [0,1]. ``noise`` (B,K,D)
        for m may come from an estimator (antithetic pairs); z's noise is drawn here. The
        samples' actions are what training renders (``train_actions``); with ``paint`` False
        they are only decoded, for a caller that renders them in another frame (the images'
        mirrors), where colours read here would be thrown away."""
        b = len(images)
        feat = self.encoder(images)
        eps_z = torch.randn(b * k, self.cfg.T, self.cfg.z_dim, generator=generator, device=images.device)
        u, kl, lpz, lqz, u_head = self._unroll(feat.repeat_interleave(k, 0), eps_z)
        u = u.reshape(b, k, -1)
        small = None
        if self.cfg.feedback:  # one correction per image, from its posterior-mean mesh
            delta = self.correction(images, self._unroll(feat, None)[0].detach())
            u = u + delta[:, None]
            u_head = u_head + delta.repeat_interleave(k, 0)
            if self.cfg.feedback_std:
                small = (delta ** 2).sum(1) / (2 * self.cfg.feedback_std ** 2)
        if noise is None:
            noise = torch.randn(b, k, self.decoder.dim, generator=generator, device=images.device)
        std = self.std()
        # harmonics the decoder leaves out (``MeshDecoder.set_shape_degree``) are 0 in the mean
        # and the sample: no score-function noise reaches the network through them
        u = self.decoder.cut(u)
        m_r = u + self.decoder.cut(std * noise)
        m = m_r.detach()
        actions = self.train_actions(m, images) if paint else self.decoder(m)
        fit = None
        if self.reader is not None:  # the decoder's colours fit to those read (module docstring)
            # one sample per image: its K samples read nearly the same colours
            _, albedo, seen = self._read_colours(actions[:, 0], images)
            head = u_head.reshape(b, k, -1)[:, 0]
            # the shape whose normals the colours are read at: the fit moves it only when asked
            shape = head if self.cfg.colour_fit_shape else head.detach()
            decoded = self.decoder.colours(head, shape_from=shape).reshape(albedo.shape)
            fit = colour_fit(albedo, seen, decoded, self.cfg.colour_prior_std)
        prior = self.shape_prior(u[:, 0])
        return Samples(m, m_r, self.log_prob(m, u), kl.reshape(b, k), lpz.reshape(b, k),
                       lqz.reshape(b, k), feat.detach(), noise, actions, u, fit, prior, small)

    def shape_prior(self, u: Tensor) -> Tensor | None:
        """-log prior (N,) of means u (N, D)'s shapes: the templates' and the mirror's, each
        where it is on; None where neither is."""
        s = u[:, self.decoder.slices["shape"]]
        terms = [] if self.templates is None else [self.template_prior(u)]
        if self.mirror_prior is not None:
            terms.append(self.mirror_prior(s))
        return sum(terms) if terms else None

    def mirror_log_prior(self, m: Tensor) -> Tensor:
        """(B,) the mirror prior's nats of parameters m (B, D), each about its own most nearly
        symmetric plane; a gradient to m."""
        return self.mirror_prior(m[:, self.decoder.slices["shape"]])

    @torch.no_grad()
    def mirror_penalty(self, m: Tensor, about: Tensor) -> Tensor:
        """(B, J) the mirror prior's nats of parameters m (B, J, D): each image's shapes about
        the plane that its parameters ``about`` (B, D) are most nearly symmetric about."""
        sl = self.decoder.slices["shape"]
        return self.mirror_prior.about(m[..., sl], self.mirror_prior.plane(about[:, sl]))

    def template_prior(self, u: Tensor) -> Tensor:
        """-log N(s; T_j, template_std^2) up to a constant, for the nearest template T_j of
        each mean's shape s: (N,) of means u (N, D); gradient to both."""
        s = u[:, self.decoder.slices["shape"]]
        d2 = ((s[:, None, :] - self.templates[None]) ** 2).sum(-1)
        return d2.min(1).values / (2 * self.cfg.template_std ** 2)

    @torch.no_grad()
    def _read_colours(self, actions: Tensor, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Actions (B, [K,] A) of meshes of ``images`` (B,3,H,W) with the seen vertices'
        colours read from their image, and the albedo read and which vertices were seen."""
        sl = geo.ACTION_SLICES
        albedo, seen = self.reader(images, actions[..., sl["lengths"]], actions[..., sl["rotation"]],
                                   actions[..., sl["translation"]])
        colours = torch.where(seen[..., None], albedo, actions[..., sl["colours"]].reshape(albedo.shape))
        return torch.cat([actions[..., :sl["colours"].start], colours.flatten(-2)], -1), albedo, seen

    @torch.no_grad()
    def train_actions(self, m: Tensor, images: Tensor) -> Tensor:
        """Renderer actions (B, [K,] A) that training renders of parameters m (B, [K,] D)
        against ``images`` (B,3,H,W): decoded, with ``train_colours: read`` the colours read."""
        actions = self.decoder(m)
        return self.paint(actions, images) if self.cfg.train_colours == "read" else actions

    @torch.no_grad()
    def paint(self, actions: Tensor, images: Tensor) -> Tensor:
        """Actions (B, [K,] A) with their colours those ``train_colours: read`` paints: the
        albedo ``images`` (B,3,H,W) show at the seen vertices on the object, fit by the colour
        harmonics at every vertex. Needs ``read_colours``."""
        if self.reader is None:
            raise ValueError("paint: reads colours from the images, so it needs model.read_colours: true")
        sl = geo.ACTION_SLICES
        lengths = actions[..., sl["lengths"]]
        albedo, seen = self.reader(images, lengths, actions[..., sl["rotation"]],
                                   actions[..., sl["translation"]], on_object=True)
        flat = lengths.reshape(-1, lengths.shape[-1])
        colours = fit_albedo(albedo.reshape(len(flat), -1, 3), seen.reshape(len(flat), -1),
                             self.decoder.colour_basis(flat))
        return torch.cat([actions[..., :sl["colours"].start],
                          colours.reshape(*lengths.shape[:-1], -1)], -1)

    def to_actions(self, m: Tensor, images: Tensor | None = None) -> Tensor:
        """Renderer actions (N, A) of mesh parameters m (N, D): decoded, with the seen
        vertices' colours read from ``images`` (N,3,H,W) when the model reads colours."""
        with torch.no_grad():
            actions = self.decoder(m)
            if self.reader is not None and images is not None:
                actions, *_ = self._read_colours(actions, images)
        return actions

    def log_prob(self, m: Tensor, mean: Tensor, std: Tensor | None = None) -> Tensor:
        """log p(m | z) (...) of parameters m (..., D) under the Gaussian of mean ``mean`` (and
        std ``std``, the model's own by default)."""
        std = self.std() if std is None else std
        return (-0.5 * ((m - mean) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI).sum(-1)

    def mean_params(self, images: Tensor) -> Tensor:
        """Mean mesh parameters m (B, D) at the posterior mean z, differentiable (for
        supervised ceilings and diagnostics)."""
        u, *_ = self._unroll(self.encoder(images), None)
        return u + self.correction(images, u) if self.cfg.feedback else u

    def answer(self, images: Tensor) -> Tensor:
        """The inferred mesh parameters m (B, D): ``mean_params``, or with ``infer_mirrors``
        or ``infer_colour_orders`` the mean of the ``looks``."""
        return self.mean_params(images) if self.symmetries is None else self.looks(images).mean(0)

    def looks(self, images: Tensor) -> Tensor:
        """(G, B, D): ``mean_params`` of the image under each element of the model's
        symmetries (``infer_mirrors``, ``infer_colour_orders``; the camera's four mirrors when
        both are off), each mapped back to the image's frame."""
        sym = self.symmetries or ImageSymmetries(self.decoder)
        out = []
        for k in range(len(sym)):
            g = torch.full((len(images),), k, device=images.device)
            out.append(sym.back(self.mean_params(sym.images(images, g)), g))
        return torch.stack(out)

    @torch.no_grad()
    def infer(self, images: Tensor) -> Tensor:
        """The most likely mesh of each image (``answer``: posterior mean z, mean m; with
        ``read_colours`` the colours q(c | x, m) reads): actions (B, A)."""
        return self.to_actions(self.answer(images), images)

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Actions of n meshes from the prior (z ~ N(0, I), mean m), on the model's device;
        z is drawn on ``generator``'s device. No feedback passes: there is no image."""
        dev = self.write.weight.device
        h = torch.zeros(n, self.cfg.hidden, device=dev)
        c = torch.zeros_like(h)
        u = torch.zeros(n, self.decoder.dim, device=dev)
        for _ in range(self.cfg.T):
            z = torch.randn(n, self.cfg.z_dim, generator=generator,
                            device=generator.device if generator is not None else dev)
            h, c = self.lstm(z.to(dev), (h, c))
            u = u + self.write(h)
        return self.decoder(u)


def images_to_tensor(images: np.ndarray, device="cpu") -> Tensor:
    """(N,H,W,3) uint8 -> (N,3,H,W) float in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
