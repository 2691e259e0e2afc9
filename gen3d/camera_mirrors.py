"""The camera's mirrors: the four exact symmetries of an image and of the mesh parameters.

The camera looks down its axis at the centre of a square image. Mirroring the scene in the
plane x = 0 or y = 0 (both: the half turn about the axis) mirrors its image pixel for pixel,
and maps the model's 162 fixed rays onto themselves, so the mesh parameters of the mirrored
scene are a linear map of the original's: the harmonics' coefficients mix within each
degree, per-ray values are permuted, the translation and the axis-angle rotation flip signs.
A quarter turn does not map the rays onto themselves (a mesh turned by it loses ~2% IoU),
so it is not one of them. The lights are not mirrored: a mirrored image's shading is not one
the renderer makes, while its silhouette and colours are exact.

``gen3d.image_symmetries`` puts them to use, with the colour orders: in training and in the
answer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gen3d import geometry as geo

NAMES = ("identity", "mirror_x", "mirror_y", "half_turn")
"""The mirrors by index: none, x -> -x (left-right), y -> -y (up-down), both."""

WORLD = torch.tensor([[1.0, 1, 1], [-1, 1, 1], [1, -1, 1], [-1, -1, 1]])
"""Each mirror's diagonal world matrix (camera frame: x right, y up, z towards the camera)."""


def mirror_images(x: Tensor, g: Tensor) -> Tensor:
    """Images x (B, C, H, W), each in its mirror g (B,) (indices into ``NAMES``)."""
    out = x.clone()
    for k, dims in ((1, (-1,)), (2, (-2,)), (3, (-2, -1))):
        sel = g == k
        if sel.any():
            out[sel] = torch.flip(x[sel], dims)
    return out


def _ray_permutation(diag: np.ndarray) -> np.ndarray:
    """Index p with rays[p] = rays * diag (the mirror maps the rays onto themselves)."""
    rays = geo.ico_rays()
    d = np.linalg.norm((rays * diag)[:, None] - rays[None], axis=-1)
    p = d.argmin(1)
    if d[np.arange(len(rays)), p].max() > 1e-6:  # pragma: no cover - a fact of the icosphere
        raise AssertionError("the mirror does not map the model's rays onto themselves")
    return p


def _basis_map(basis: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """(K, K) M with f(mirror(d)) = basis(d) @ (M @ c) for f(d) = basis(d) @ c, given the basis
    (162, K) at the rays and the mirror's permutation of them: exact when the basis's span is
    closed under the mirror (the harmonics of each degree are)."""
    mirrored = perm @ basis
    m = np.linalg.lstsq(basis, mirrored, rcond=None)[0]
    if np.abs(basis @ m - mirrored).max() > 1e-6:
        raise ValueError("a basis of the mesh parameters is not closed under the camera's "
                         "mirrors: set train.mirror_images: false")
    return m


def parameter_maps(decoder) -> Tensor:
    """(4, D, D) linear maps of a ``gen3d.mesh_model.MeshDecoder``'s parameters m (D,), one
    per mirror: the mesh decoded from ``maps[g] @ m`` is the mesh of m mirrored by g (and each
    map is its own inverse). Raises ValueError for parameters that have no such map."""
    if decoder.cfg.rotation_hypotheses:
        raise ValueError("model.rotation_hypotheses have no mirror map: set them to 0, or "
                         "train.mirror_images and model.infer_mirrors to false")
    maps = torch.zeros(len(NAMES), decoder.dim, decoder.dim, dtype=torch.float64)
    for g, diag in enumerate(WORLD.double().numpy()):
        maps[g] = torch.from_numpy(_mirror_map(decoder, diag, diag))
    return maps.float()


def depth_flip(decoder) -> Tensor:
    """(D, D) linear map of a decoder's parameters m: the mesh decoded from ``flip @ m`` is
    the mesh of m mirrored front to back (z -> -z) about its own centre. Not a symmetry of the
    image: a proposal. An object whose silhouette barely tells its front from its back (a
    pyramid's apex towards the camera or away) is a jump that no small step makes."""
    cfg = decoder.cfg
    if cfg.rotation_hypotheses:
        raise ValueError("model.rotation_hypotheses have no mirror map: set them to 0, or "
                         "train.self_imitation_search_flip to false")
    return torch.from_numpy(_mirror_map(decoder, np.array([1.0, 1, -1]), np.ones(3))).float()


def _mirror_map(decoder, diag: np.ndarray, move: np.ndarray) -> np.ndarray:
    """(D, D): the mirror diag(``diag``) of the mesh about its centre, the centre itself
    multiplied by ``move`` (the camera's mirrors move it; a mirror about the centre does not)."""
    sl, dim = decoder.slices, decoder.dim
    a = np.zeros((dim, dim))
    perm = np.eye(geo.N_RAYS)[_ray_permutation(diag)]
    _put(a, sl["shape"], _shape_map(decoder, perm))
    _put(a, sl["translation"], np.diag(move))
    # an axial vector: a mirror (det -1) turns the other way
    _put(a, sl["rotation"], np.prod(diag) * np.diag(diag))
    _put(a, sl["colour"], _colour_map(decoder, perm))
    return a


def _put(a: np.ndarray, s: slice, block: np.ndarray) -> None:
    if s.stop > s.start:
        a[s, s] = block


def _shape_map(decoder, perm: np.ndarray) -> np.ndarray:
    cfg = decoder.cfg
    if cfg.shape != "sh":
        return perm
    fn = geo.mirror_sph_harm if cfg.shape_symmetry == "mirror" else geo.real_sph_harm
    return _basis_map(fn(geo.ico_rays(), cfg.shape_degree), perm)


def _colour_map(decoder, perm: np.ndarray) -> np.ndarray:
    cfg = decoder.cfg
    if cfg.colour == "uniform":
        return np.eye(3)
    if cfg.colour == "raw":  # (162, 3) flattened ray-major
        return np.kron(perm, np.eye(3))
    y = _basis_map(geo.real_sph_harm(geo.ico_rays(), cfg.colour_degree), perm)
    if cfg.colour == "sh":  # (3, K) flattened channel-major
        return np.kron(np.eye(3), y)
    p = cfg.palette_size  # the palette's colours stay, its assignment logits mirror
    return np.block([[np.eye(3 * p), np.zeros((3 * p, p * len(y)))],
                     [np.zeros((p * len(y), 3 * p)), np.kron(np.eye(p), y)]])
