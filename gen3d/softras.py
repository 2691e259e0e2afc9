"""A soft rasteriser in torch for the ray meshes: the differentiable twin of the GL renderer.

Same mesh (vertex i at ``R (lengths_i * ray_i) + t``), camera, lights and shading as
``envs.renderer.MeshRenderer``: flat face normals, two-sided Lambertian light from up to three
directional lights plus ambient, albedo * shade clamped per corner and interpolated
perspective-correctly, back faces culled, black background. Only the silhouette is soft:

- ``mode="edges"`` (default): coverage ``sigmoid(signed distance to the silhouette / sigma)``,
  the distance taken to the nearest silhouette edge (an edge whose neighbour face is not
  drawn), its sign from the hard coverage; colour from a hard z-buffer inside, from the
  nearest silhouette edge outside. The coverage is a function of the distance to the outline
  alone, so the silhouette's area changes at the rate GL's does (test_softras measures it).
- ``mode="faces"`` (after SoftRas, Liu et al. 2019): each face covers with
  ``D_j = sigmoid(signed distance to its own edges / sigma)`` and a pixel's faces are
  composited front to back (``D_j * prod_{k nearer} (1 - D_k)``). Every edge is soft, so
  faces' shared edges show as darker seams at large sigma and the area follows GL less well.

As sigma -> 0 both become the GL image. Work is done on flat lists of (face or edge, pixel)
pairs within each box (grown by the distance where the coverage falls below ``cutoff``),
reduced per pixel with ``index_add``: the cost follows the pixels a mesh covers, not pixels x
faces. gen3d may not import ``envs``: pass the lights as arrays
(``envs.renderer.Lights().arrays()`` gives the GL defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from gen3d import geometry as geo


@dataclass
class SoftRender:
    """``rgb`` (..., H, W, 3) in [0,1]; ``alpha`` (..., H, W) soft silhouette in [0,1]."""

    rgb: Tensor
    alpha: Tensor


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues in torch, (..., 3) -> (..., 3, 3), smooth at zero (series for small angles)."""
    t2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (...,1,1)
    small = t2 < 1e-8
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    a = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(t)) / torch.where(small, 1.0, t2))
    x, y, z = aa.unbind(-1)
    o = torch.zeros_like(x)
    k = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


class SoftRasteriser:
    """Renders batches of ray meshes at ``width`` x ``height``, differentiably.

    sigma: edge softness in pixels (GL-like at 0.02, smooth gradients at 0.5-1);
    mode: "edges" (soft outline, hard inside) or "faces" (every face edge soft, SoftRas);
    cutoff: coverage below which a pixel is left out of an edge's reach (sets the work);
    cull: drop faces turned away from the camera, as the GL renderer does;
    chunk: meshes per pass (bounds the temporaries);
    turn: (3, 3) a rotation applied to every mesh about its own centre after its own rotation
    (``geometry.turn_actions``: a second view's camera orbiting the object), or None.
    """

    def __init__(self, width: int, height: int, lights: tuple, camera: geo.Camera | None = None,
                 sigma: float = 0.5, mode: str = "edges", cutoff: float = 1e-3,
                 cull: bool = True, chunk: int = 64, turn: np.ndarray | None = None):
        if int(width) != width or int(height) != height or width < 1 or height < 1:
            raise ValueError(f"width and height must be whole numbers >= 1, got {width}x{height}")
        if int(chunk) != chunk or chunk < 1:
            raise ValueError(f"chunk (meshes per pass) must be a whole number >= 1, got {chunk}")
        if hasattr(lights, "arrays"):  # a Lights object: the arrays it stands for
            lights = lights.arrays()
        if not 0 < sigma < math.inf:
            raise ValueError(f"softness: sigma (pixels) must be finite and > 0, got {sigma}")
        if mode not in ("edges", "faces"):
            raise ValueError(f"mode must be 'edges' or 'faces', got {mode!r}")
        if not 0 < cutoff < 0.5:
            raise ValueError(f"cutoff must be in (0, 0.5), got {cutoff}")
        self.width, self.height, self.mode = int(width), int(height), mode
        self.sigma, self.cull, self.chunk = float(sigma), cull, int(chunk)
        self.margin = self.sigma * math.log(1 / cutoff - 1)  # pixels where coverage >= cutoff
        self.camera = camera or geo.Camera()
        d, c, amb = (np.asarray(a, np.float32) for a in lights)
        if d.shape != (3, 3) or c.shape != (3, 3) or amb.shape != (3,):
            raise ValueError("lights: pass (directions (3,3) unit vectors, colours (3,3), ambient "
                             "(3,)), e.g. envs.renderer.Lights().arrays()")
        faces = geo.ico_faces().astype(np.int64)
        self._np = {"rays": geo.ico_rays(), "faces": faces, "neighbours": _neighbours(faces),
                    "view": self.camera.view(), "proj": self.camera.projection(width / height),
                    "eye": np.asarray(self.camera.eye), "light_dir": d, "light_rgb": c,
                    "ambient": amb}
        if turn is not None:
            self._np["turn"] = np.asarray(turn, np.float32).reshape(3, 3)
        self._const: dict = {}

    def _consts(self, like: Tensor) -> dict[str, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._const:
            self._const[key] = {
                k: torch.tensor(v, device=like.device, dtype=like.dtype
                                if np.issubdtype(v.dtype, np.floating) else torch.long)
                for k, v in self._np.items()}
        return self._const[key]

    # ------------------------------------------------------------------ public

    def render_actions(self, actions: Tensor) -> SoftRender:
        """Renderer actions (..., 654) as the model's decoder writes them (``ACTION_SLICES``)."""
        if actions.shape[-1] != geo.ACTION_DIM:
            raise ValueError(f"actions: last axis must be {geo.ACTION_DIM}, "
                             f"got {tuple(actions.shape)}")
        lead = actions.shape[:-1]
        a = actions.reshape(-1, geo.ACTION_DIM)
        s = geo.ACTION_SLICES
        out = self.render_rays(a[:, s["lengths"]], a[:, s["rotation"]], a[:, s["translation"]],
                               a[:, s["colours"]].reshape(len(a), geo.N_RAYS, 3))
        h, w = self.height, self.width
        return SoftRender(out.rgb.reshape(*lead, h, w, 3), out.alpha.reshape(*lead, h, w))

    def render_rays(self, lengths: Tensor, rotation: Tensor | None = None,
                    translation: Tensor | None = None, colours: Tensor | None = None) -> SoftRender:
        """lengths (B,162) >= 0; rotation (B,3) axis-angle; translation (B,3); colours
        (B,162,3) per vertex or (B,3) per mesh in [0,1] (default grey 0.7), as the GL renderer."""
        if not isinstance(lengths, Tensor):
            raise TypeError(f"lengths: must be a torch tensor (the soft render is differentiated "
                            f"in torch), got {type(lengths).__name__}; use torch.as_tensor")
        if lengths.dim() != 2 or lengths.shape[1] != geo.N_RAYS:
            raise ValueError(f"lengths: must have shape (B, {geo.N_RAYS}), "
                             f"got {tuple(lengths.shape)}")
        b = len(lengths)
        rotation = lengths.new_zeros(b, 3) if rotation is None else rotation
        translation = lengths.new_zeros(b, 3) if translation is None else translation
        if colours is None:
            colours = lengths.new_full((b, geo.N_RAYS, 3), 0.7)
        elif colours.shape == (b, 3):
            colours = colours[:, None, :].expand(b, geo.N_RAYS, 3)
        for name, t, shape in (("lengths", lengths, (b, geo.N_RAYS)), ("rotation", rotation, (b, 3)),
                               ("translation", translation, (b, 3)),
                               ("colours", colours, (b, geo.N_RAYS, 3))):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name}: must have shape {shape}, got {tuple(t.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}: contains NaN or inf; all values must be finite")
        if bool((lengths < 0).any()):
            raise ValueError("lengths: must be >= 0 (distances along the rays), got a minimum "
                             f"of {float(lengths.min()):.4g}")
        if not b:
            h, w = self.height, self.width
            return SoftRender(lengths.new_zeros(0, h, w, 3), lengths.new_zeros(0, h, w))
        parts = [self._render(lengths[i:i + self.chunk], rotation[i:i + self.chunk],
                              translation[i:i + self.chunk], colours[i:i + self.chunk])
                 for i in range(0, b, self.chunk)]
        return SoftRender(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    # ------------------------------------------------------------------ internals

    def _render(self, lengths: Tensor, rot: Tensor, trans: Tensor, albedo: Tensor):
        c = self._consts(lengths)
        n, h, w = len(lengths), self.height, self.width
        # broadcast products, not matmuls: a mesh's image must not depend on the batch it
        # is drawn in, and batched matmuls round differently with the batch size
        r = axis_angle_to_matrix(rot)
        if "turn" in c:
            r = (c["turn"][None, :, :, None] * r[:, None]).sum(-2)
        world = _apply(r[:, None], lengths[..., None] * c["rays"])
        world = world + trans[:, None, :]                                   # (n,V,3)
        cam = _apply(c["view"][:3, :3], world) + c["view"][:3, 3]
        clip = _apply(c["proj"][:, :3], cam) + c["proj"][:, 3]              # (n,V,4)
        depth = -cam[..., 2]                                                # = clip w
        ndc = clip[..., :2] / depth.clamp_min(1e-6)[..., None]
        # window coordinates in pixels, y up: pixel (row, col) has its centre at
        # (col + 0.5, h - 1 - row + 0.5), as in GL
        uv = (ndc + 1) * 0.5 * torch.tensor([w, h], dtype=ndc.dtype, device=ndc.device)
        f, nb = c["faces"], c["neighbours"]
        tri = uv[:, f]                                                      # (n,F,3,2)
        tri_d = depth[:, f]                                                 # (n,F,3)
        area = _cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
        a = area.detach()
        keep = (tri_d.detach() > self.camera.near).all(-1) & (a.abs() > 1e-6)
        if self.cull:
            keep &= a > 0  # counter-clockwise on screen (y up) faces the camera
        # a silhouette edge: the face across it is not drawn, or turned the other way
        turned = torch.sign(a)[:, nb] != torch.sign(a)[..., None]
        outline = keep[..., None] & (~keep[:, nb] | turned)
        if self.mode == "faces":
            outline = keep[..., None].expand(-1, -1, 3)
        corner = self._shade(world, albedo, c)                              # (n,F,3,3)
        nf = n * f.shape[0]
        grow = outline.any(-1) if self.mode == "faces" else torch.zeros_like(keep)
        lo, hi = tri.detach().amin(2), tri.detach().amax(2)
        pf, col, row = self._pairs(lo, hi, grow[..., None] * self.margin, keep)
        pix = ((pf // f.shape[0]) * h + (h - 1 - row)) * w + col
        # per-face rows gathered once per pair (1-D rows vectorise well); a face left out
        # may have no area or depth, and its 1/0 would turn the zero gradient it gets into NaN
        area = torch.where(keep, area, torch.ones_like(area))
        tri_d = torch.where(keep[..., None], tri_d, torch.ones_like(tri_d))
        rows = torch.cat([tri.reshape(nf, 6).T, (1.0 / area).reshape(1, nf),
                          (1.0 / tri_d).reshape(nf, 3).T, corner.reshape(nf, 9).T,
                          outline.reshape(nf, 3).T.to(tri)])
        g = rows.index_select(1, pf)                                        # (22, P)
        px, py = col.to(g) + 0.5, row.to(g) + 0.5
        signed, lam = _signed_distance(px, py, g[:6], g[6], g[19:22] > 0)
        # perspective-correct interpolation from clamped barycentrics (as GL, by 1/w)
        q = lam * g[7:10]
        colour = (q[:, None] * g[10:19].reshape(3, 3, -1)).sum(0) / q.sum(0)  # (3 rgb, P)
        z = 1.0 / q.sum(0)
        npix = n * h * w
        if self.mode == "faces":
            rgb, alpha = _over(pix, signed / self.sigma, z, colour, npix, self.camera.far)
            return rgb.reshape(n, h, w, 3), alpha.reshape(n, h, w)
        inside = signed.detach() >= 0
        hard = torch.full_like(signed, -1e6).masked_fill(inside, 1e6)  # D = 1 inside, else 0
        rgb, cover = _over(pix, hard, z, colour, npix, self.camera.far)
        # soft outline: distance to the nearest silhouette edge, signed by the hard coverage
        dist, tail, foot = self._outline(tri, corner, outline, npix)
        covered = cover.detach() > 0.5
        # a covered pixel whose nearest outline edge has covered pixels beyond it too sees an
        # occluding contour inside the silhouette: not an edge of the coverage
        near = torch.isfinite(dist) & ~(covered & self._covered_beyond(foot, covered, n))
        sd = torch.where(covered, dist, -dist)
        alpha = torch.where(near, torch.sigmoid(sd / self.sigma), cover)
        rgb = torch.where(covered[:, None], rgb, tail) * alpha[:, None]
        return rgb.reshape(n, h, w, 3), alpha.reshape(n, h, w)

    def _covered_beyond(self, foot: Tensor, covered: Tensor, n: int) -> Tensor:
        """Whether the pixel a step past ``foot`` (npix, 2: each pixel's nearest outline point),
        away from the pixel, is covered."""
        h, w = self.height, self.width
        idx = torch.arange(n * h * w, device=foot.device)
        col, row = idx % w, (h - 1) - (idx // w) % h  # row counted from the bottom
        centre = torch.stack([col, row], -1).to(foot) + 0.5
        step = foot - centre
        step = step / step.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        probe = torch.floor(foot + 0.75 * step).nan_to_num(-1).long()
        ok = (probe[:, 0] >= 0) & (probe[:, 0] < w) & (probe[:, 1] >= 0) & (probe[:, 1] < h)
        at = ((idx // (h * w)) * h + (h - 1 - probe[:, 1].clamp(0, h - 1))) * w
        return ok & covered[at + probe[:, 0].clamp(0, w - 1)]

    def _outline(self, tri: Tensor, corner: Tensor, outline: Tensor, npix: int):
        """Per pixel: distance (npix,) to the nearest silhouette edge within ``margin`` (inf
        where none), the colour (npix, 3) and the position (npix, 2, NaN where none) of the
        nearest point of that edge."""
        fi, k = outline.reshape(-1, 3).nonzero(as_tuple=True)  # edge k of face fi (flat)
        t = tri.reshape(-1, 3, 2)
        s, e = t[fi, (k + 1) % 3], t[fi, (k + 2) % 3]                      # (E,2) ends
        cc = corner.reshape(-1, 3, 3)
        cs, ce = cc[fi, (k + 1) % 3], cc[fi, (k + 2) % 3]
        lo = torch.minimum(s, e).detach()
        hi = torch.maximum(s, e).detach()
        m = torch.full_like(lo, self.margin)
        pe, col, row = self._pairs(lo, hi, m, torch.ones_like(fi, dtype=torch.bool))
        h, w, nfaces = self.height, self.width, geo.N_FACES
        pix = ((fi[pe] // nfaces) * h + (h - 1 - row)) * w + col
        d = (e - s)[pe]
        qx, qy = col.to(d) + 0.5 - s[pe, 0], row.to(d) + 0.5 - s[pe, 1]
        u = ((qx * d[:, 0] + qy * d[:, 1]) / (d * d).sum(1).clamp_min(1e-12)).clamp(0, 1)
        dist = torch.sqrt((qx - u * d[:, 0]) ** 2 + (qy - u * d[:, 1]) ** 2 + 1e-10)
        # the nearest edge of each pixel (ties: the last pair), by selection: min is not smooth
        best = torch.full((npix,), torch.inf, dtype=dist.dtype, device=dist.device)
        best = best.scatter_reduce(0, pix, dist.detach(), "amin")
        order = torch.arange(len(pix), device=pix.device)
        cand = torch.where(dist.detach() == best[pix], order, -1)
        pick = torch.full((npix,), -1, dtype=torch.long, device=pix.device)
        pick = pick.scatter_reduce(0, pix, cand, "amax")
        sel = pick[pick >= 0]
        out = torch.full((npix,), torch.inf, dtype=dist.dtype, device=dist.device)
        out = out.index_put((pix[sel],), dist[sel])
        colour = (1 - u[sel, None]) * cs[pe[sel]] + u[sel, None] * ce[pe[sel]]
        tail = torch.zeros(npix, 3, dtype=dist.dtype, device=dist.device)
        foot = torch.full((npix, 2), torch.nan, dtype=dist.dtype, device=dist.device)
        foot[pix[sel]] = (s[pe[sel]] + u[sel, None] * d[sel]).detach()
        return out, tail.index_put((pix[sel],), colour), foot

    def _shade(self, world: Tensor, albedo: Tensor, c: dict[str, Tensor]) -> Tensor:
        """Corner colours (n,F,3 corners,3): albedo * Lambertian shade of the flat face,
        clamped to [0,1], lit on the side the camera sees (two-sided, as the GL shader)."""
        v = world[:, c["faces"]]                                            # (n,F,3,3)
        nrm = torch.cross(v[..., 1, :] - v[..., 0, :], v[..., 2, :] - v[..., 0, :], dim=-1)
        nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        facing = ((c["eye"] - v[..., 0, :]) * nrm).sum(-1, keepdim=True)
        nrm = torch.where(facing < 0, -nrm, nrm)
        lam = torch.relu(_apply(c["light_dir"], nrm))                       # (n,F,3 lights)
        shade = c["ambient"] + _apply(c["light_rgb"].T, lam)                # (n,F,3 rgb)
        return (albedo[:, c["faces"]] * shade[:, :, None, :]).clamp(0.0, 1.0)

    def _pairs(self, lo: Tensor, hi: Tensor, margin: Tensor, keep: Tensor):
        """Every (item, pixel) pair with the pixel centre inside the item's box [lo, hi] (..., 2)
        grown by ``margin`` (..., 1 or 2): flat item index, pixel column and row counted from
        the bottom (y up)."""
        lo = torch.ceil(lo - margin - 0.5).long().clamp_min(0)
        hi = torch.floor(hi + margin - 0.5).long()
        hi = torch.minimum(hi, torch.tensor([self.width - 1, self.height - 1], device=hi.device))
        span = (hi - lo + 1).clamp_min(0)
        count = (span[..., 0] * span[..., 1] * keep).reshape(-1)
        pf = torch.repeat_interleave(torch.arange(len(count), device=lo.device), count)
        start = torch.cumsum(count, 0) - count
        local = torch.arange(len(pf), device=lo.device) - start[pf]
        sx = span[..., 0].reshape(-1)[pf]
        lo = lo.reshape(-1, 2)[pf]
        return pf, lo[:, 0] + local % sx, lo[:, 1] + local // sx


def _over(pix: Tensor, logit: Tensor, z: Tensor, colour: Tensor, npix: int,
          far: float) -> tuple[Tensor, Tensor]:
    """Front-to-back "over" compositing of each pixel's faces in depth order (a soft
    z-buffer): face j gets weight D_j * prod_{k nearer} (1 - D_k), D = sigmoid(logit), so the
    weights sum to the coverage 1 - prod_j (1 - D_j)."""
    zq = (z.detach() * (2**30 / far)).long().clamp(0, 2**31 - 1)
    # by pixel, then nearest first; stable and on a fixed scale, so that a mesh's image does
    # not depend on what else is in the batch
    order = torch.sort(pix * 2**31 + zq, stable=True).indices
    p = pix[order]
    log_miss = logsigmoid(-logit[order]).double()  # log(1 - D)
    # transmittance before each face: exclusive cumulative sum of log(1 - D) within the pixel
    # (float64: the running sum spans every pixel of the chunk)
    excl = torch.cumsum(log_miss, 0) - log_miss
    first = torch.ones_like(p, dtype=torch.bool)
    first[1:] = p[1:] != p[:-1]
    seg = torch.cumsum(first.long(), 0) - 1
    trans = torch.exp(excl - excl[first][seg]).to(logit)
    wgt = torch.sigmoid(logit[order]) * trans
    alpha = torch.zeros(npix, dtype=wgt.dtype, device=wgt.device).index_add(0, p, wgt)
    rgb = torch.zeros(npix, 3, dtype=wgt.dtype, device=wgt.device)
    return rgb.index_add(0, p, (wgt * colour[:, order]).T), alpha.clamp(0, 1)


def _neighbours(faces: np.ndarray) -> np.ndarray:
    """(F,3): the face across edge k (the edge opposite corner k) of each face."""
    owner = {}
    for i, f in enumerate(faces):
        for k in range(3):
            owner[(f[(k + 1) % 3], f[(k + 2) % 3])] = i
    return np.array([[owner[(f[(k + 2) % 3], f[(k + 1) % 3])] for k in range(3)] for f in faces])


def _apply(m: Tensor, v: Tensor) -> Tensor:
    """Matrices (..., R, C) times vectors (..., C) -> (..., R)."""
    return (m * v[..., None, :]).sum(-1)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _signed_distance(px: Tensor, py: Tensor, t: Tensor, inv_area: Tensor,
                     soft: Tensor) -> tuple[Tensor, Tensor]:
    """Signed distance (P,) from points (px, py) to the ``soft`` edges ((3, P), edge k
    opposite corner k) of triangles t (6, P) = rows ax, ay, bx, by, cx, cy (counter-clockwise),
    > 0 inside, +-1e6 px when no edge is soft; and the barycentrics (3, P) of the nearest
    point of the triangle (clamped, summing to 1)."""
    ax, ay, bx, by, cx, cy = t
    lam, d2 = [], []
    # barycentric k is the edge function of the opposite edge over the area
    for sx, sy, ex, ey in ((bx, by, cx, cy), (cx, cy, ax, ay), (ax, ay, bx, by)):
        dx, dy = ex - sx, ey - sy
        qx, qy = px - sx, py - sy
        lam.append((dx * qy - dy * qx) * inv_area)
        u = ((qx * dx + qy * dy) / (dx * dx + dy * dy).clamp_min(1e-12)).clamp(0, 1)
        d2.append((qx - u * dx) ** 2 + (qy - u * dy) ** 2)
    d2 = [torch.where(s, d, torch.full_like(d, 1e12)) for s, d in zip(soft, d2)]
    lam_t = torch.stack(lam)
    inside = (lam_t >= 0).all(0)
    dist = torch.sqrt(torch.minimum(torch.minimum(d2[0], d2[1]), d2[2]) + 1e-10)
    lam_t = lam_t.clamp_min(0)
    lam_t = lam_t / lam_t.sum(0, keepdim=True).clamp_min(1e-12)
    return torch.where(inside, dist, -dist), lam_t
