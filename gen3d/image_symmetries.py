"""Exact symmetries of the data: the camera's mirrors, and the order of the colour channels.

The lights and the ambient term are grey, so a scene whose albedos have their red, green and
blue swapped renders as the same image with its channels swapped, pixel for pixel; the mesh
parameters of that scene are the original's with their colour channels permuted (per-vertex,
harmonic, uniform and palette colours alike) and shape and pose unchanged. With the camera's
mirrors (``gen3d.camera_mirrors``), which change shape and pose but not the channels, they
make a group of 4 x 6 = 24 maps of images and parameters. A swapped image is not one the data
would draw (its side colours are not the data's ten), but its shape is one the data has.

``ImageSymmetries`` is the group a run uses: the mirrors, the colour orders, or both. Training
(``train.mirror_images``, ``train.colour_orders``) shows each image in a random element and
maps the samples back before they are rendered against the image itself; the answer
(``model.infer_mirrors``, ``model.infer_colour_orders``) is the mean of the network's answers
to every element, each mapped back.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from gen3d import camera_mirrors as cm

COLOUR_ORDERS = tuple(itertools.permutations(range(3)))
"""The six orders of the (r, g, b) channels: image channel c of order o is channel o[c]."""
_ORDERS = torch.tensor(COLOUR_ORDERS)


def order_images(x: Tensor, o: Tensor) -> Tensor:
    """Images x (B, 3, H, W), each with its channels in order o (B,) (indices into
    ``COLOUR_ORDERS``)."""
    index = _ORDERS.to(x.device)[o]  # (B, 3)
    return torch.take_along_dim(x, index[:, :, None, None], dim=1)


def colour_order_maps(decoder) -> Tensor:
    """(6, D, D) permutation matrices of a ``MeshDecoder``'s parameters, one per colour
    order: the mesh decoded from ``maps[o] @ m`` is m's with its colours' channels in order o."""
    cfg, sl, dim = decoder.cfg, decoder.slices, decoder.dim
    n = sl["colour"].stop - sl["colour"].start
    maps = torch.zeros(len(COLOUR_ORDERS), dim, dim, dtype=torch.float64)
    for k, order in enumerate(COLOUR_ORDERS):
        c = np.eye(3)[list(order)]  # row c picks channel order[c]
        if cfg.colour == "sh":  # (3, K) channel-major
            block = np.kron(c, np.eye(n // 3))
        elif cfg.colour == "palette":  # (p, 3) colours, then the assignment logits, which stay
            block = np.eye(n)
            block[:3 * cfg.palette_size, :3 * cfg.palette_size] = np.kron(np.eye(cfg.palette_size), c)
        else:  # (V, 3) channel-last: raw (a colour per ray) or uniform (one)
            block = np.kron(np.eye(n // 3), c)
        a = np.eye(dim)
        a[sl["colour"], sl["colour"]] = block
        maps[k] = torch.from_numpy(a)
    return maps


class ImageSymmetries:
    """A group of exact symmetries (the camera's mirrors, the colour orders, or both): element
    g is mirror ``mirror[g]`` after colour order ``order[g]`` (with both, g = mirror + 4 order;
    a part that is off is the identity)."""

    def __init__(self, decoder, mirrors: bool = True, colour_orders: bool = False):
        if not (mirrors or colour_orders):
            raise ValueError("ImageSymmetries: take the mirrors, the colour orders or both")
        m = cm.parameter_maps(decoder).double() if mirrors else torch.eye(decoder.dim)[None].double()
        c = colour_order_maps(decoder) if colour_orders else torch.eye(decoder.dim)[None].double()
        parts = [(i, j) for j in range(len(c)) for i in range(len(m))]
        self.names = [" + ".join([cm.NAMES[i]] * mirrors + [_order_name(j)] * colour_orders)
                      for i, j in parts]
        self.mirror, self.order = (torch.tensor(p) for p in zip(*parts))  # of each element
        self.ordered = colour_orders
        # mirrors and channel orders commute; a mirror is its own inverse, an order's inverse
        # is its transpose; as products with permutations these are exact in float32
        self.maps = torch.stack([m[i] @ c[j] for i, j in parts]).float()
        self.inverse = torch.stack([c[j].T @ m[i] for i, j in parts]).float()

    def __len__(self) -> int:
        return len(self.names)

    def draw(self, n: int, generator: torch.Generator | None, device) -> Tensor:
        """Element indices (n,), uniform over the group."""
        return torch.randint(len(self), (n,), generator=generator, device=device)

    def images(self, x: Tensor, g: Tensor) -> Tensor:
        """Images x (B, 3, H, W), image b under element g[b]."""
        if self.ordered:  # not otherwise: the copy would change the images' memory layout,
            x = order_images(x, self._on("order", g.device)[g])  # and the convolutions' sums
        return cm.mirror_images(x, self._on("mirror", g.device)[g])

    def to_frame(self, m: Tensor, g: Tensor) -> Tensor:
        """Parameters m (B, ..., D) of image b as they are in its element g[b]'s frame."""
        return self._apply("maps", m, g)

    def back(self, m: Tensor, g: Tensor) -> Tensor:
        """Parameters m (B, ..., D) in element g[b]'s frame, mapped back to the image's."""
        return self._apply("inverse", m, g)

    def _apply(self, which: str, m: Tensor, g: Tensor) -> Tensor:
        return torch.einsum("bij,b...j->b...i", self._on(which, m.device)[g], m)

    def _on(self, which: str, device) -> Tensor:
        """Table ``which`` on ``device``: moved there once, not every step."""
        t = getattr(self, which)
        if t.device != torch.device(device):
            t = t.to(device)
            setattr(self, which, t)
        return t


def group(decoder, mirrors: bool, colour_orders: bool) -> ImageSymmetries | None:
    """The symmetries a config switches on for ``decoder``, or None when it switches none."""
    return ImageSymmetries(decoder, mirrors, colour_orders) if mirrors or colour_orders else None


def _order_name(j: int) -> str:
    return "rgb" if j == 0 else "".join("rgb"[c] for c in COLOUR_ORDERS[j])
