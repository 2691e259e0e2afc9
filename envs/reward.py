"""Rewards reduced on the GL side: the Gaussian log-likelihood of each atlas tile against its
target image, computed where the images are, so that one number per mesh is read back instead
of the images.

Two passes over the atlas just drawn: one fragment per (tile, row) sums the row's squared
differences in integer units of 1/255 (exact: a row of any width the GL allows stays under
2^32), then one fragment per tile adds its rows into 64 bits. The host turns each exact sum
into nats in float64: the same numbers as ``envs.spaces.gaussian_loglik``, which compares 8-bit
images exactly too. Targets live in a texture array uploaded once per target set (4 pixels a texel:
fetches are what the pass costs on llvmpipe); a request names each tile's target by index.
"""

from __future__ import annotations

import numpy as np

from envs import shaders

_NEAREST = (0x2600, 0x2600)  # integer textures are incomplete under any other filter


class TileRewards:
    """The reduction passes and target store for one renderer's atlas (same GL context)."""

    def __init__(self, ctx, colour, cols: int, width: int, height: int, max_batch: int):
        limit = int(ctx.info["GL_MAX_TEXTURE_SIZE"])
        if max_batch > limit:
            raise ValueError(f"GL-side rewards: max_batch={max_batch} is over this GL's texture "
                             f"size limit of {limit}; lower max_batch or use reward='numpy'")
        self.ctx, self.colour = ctx, colour
        self.cols, self.width, self.height, self.max_batch = cols, width, height, max_batch
        self.per_layer = max(1, limit // height)
        self._quads = -(-width // 4)  # target texels a row: 4 pixels each
        self.max_layers = int(ctx.info["GL_MAX_ARRAY_TEXTURE_LAYERS"])
        self._row_prog = ctx.program(vertex_shader=shaders.COVER_VS, fragment_shader=shaders.ROW_SUMS_FS)
        self._tile_prog = ctx.program(vertex_shader=shaders.COVER_VS, fragment_shader=shaders.TILE_SUMS_FS)
        self._row_vao = ctx.vertex_array(self._row_prog, [])
        self._tile_vao = ctx.vertex_array(self._tile_prog, [])
        self._idx_tex = ctx.texture((max_batch, 1), 1, dtype="i4")
        self._rows_tex = ctx.texture((height, max_batch), 1, dtype="u4")
        self._sums_tex = ctx.texture((max_batch, 1), 2, dtype="u4")
        for t in (self._idx_tex, self._rows_tex, self._sums_tex):
            t.filter = _NEAREST
        self._rows_fbo = ctx.framebuffer([self._rows_tex])
        self._sums_fbo = ctx.framebuffer([self._sums_tex])
        self._store = None
        self._layers = 0
        self.source: np.ndarray | None = None
        self.n_targets = 0
        for name, value in (("colour", 0), ("targets", 1), ("target_idx", 2), ("cols", cols),
                            ("tile", (width, height)), ("per_layer", self.per_layer)):
            self._row_prog[name].value = value
        self._tile_prog["row_sums"].value = 3
        self._tile_prog["rows"].value = height

    def set_targets(self, images: np.ndarray) -> None:
        """Upload target images (N,H,W,3) uint8; kept until the next call."""
        imgs = np.asarray(images)
        shape = (self.height, self.width, 3)
        if imgs.ndim != 4 or imgs.shape[1:] != shape or imgs.dtype != np.uint8 or not len(imgs):
            raise ValueError(f"targets: need uint8 images of shape (N, {', '.join(map(str, shape))}) "
                             f"with N >= 1, got {imgs.dtype} {imgs.shape}")
        n = len(imgs)
        layers = -(-n // self.per_layer)
        if layers > self.max_layers:
            raise ValueError(f"targets: {n} images need {layers} texture layers, over this GL's "
                             f"limit of {self.max_layers}; split the target set")
        if layers > self._layers:
            if self._store is not None:
                self._store.release()
            self._store = self.ctx.texture_array((self._quads, self.per_layer * self.height, layers),
                                                 4, dtype="u4")
            self._store.filter = _NEAREST
            self._layers = layers
        for layer, lo in enumerate(range(0, n, self.per_layer)):  # a layer at a time: bounded memory
            part = imgs[lo:lo + self.per_layer]
            rows = len(part) * self.height
            self._store.write(self._pack(part), viewport=(0, 0, layer, self._quads, rows, 1))
        self.source, self.n_targets = imgs, n

    def _pack(self, imgs: np.ndarray) -> np.ndarray:
        """(N,H,W,3) uint8 -> (N,H,ceil(W/4),4) uint32: 4 RGBA8 pixels a texel, the row padded
        with black to a multiple of 4 (the shader never reads the padding)."""
        n = len(imgs)
        rgba = np.zeros((n, self.height, 4 * self._quads, 4), np.uint8)
        rgba[:, :, :self.width, :3] = imgs
        return rgba.view("<u4").reshape(n, self.height, self._quads, 4)

    def check_idx(self, target_idx, n: int) -> np.ndarray:
        idx = np.asarray(target_idx)
        if self._store is None:
            raise ValueError("target_idx: no targets on the GL side; call set_targets(images) first")
        if (idx.shape != (n,) or not np.issubdtype(idx.dtype, np.integer)
                or (n and (idx.min() < 0 or idx.max() >= self.n_targets))):
            raise ValueError(f"target_idx: need {n} integer indices in [0, {self.n_targets}), got "
                             f"{idx.dtype} {idx.shape}")
        return idx.astype(np.int32)

    def tile_sums(self, idx: np.ndarray) -> np.ndarray:
        """Summed squared differences (units of 1/255) of tiles 0..len(idx)-1 of the atlas just
        drawn against targets ``idx``: (n,) int64."""
        n = len(idx)
        ctx = self.ctx
        self._idx_tex.write(np.ascontiguousarray(idx, np.int32).tobytes(), viewport=(0, 0, n, 1))
        ctx.disable(ctx.DEPTH_TEST | ctx.CULL_FACE)
        self.colour.use(0)
        self._store.use(1)
        self._idx_tex.use(2)
        self._rows_fbo.use()
        ctx.viewport = (0, 0, self.height, n)
        self._row_vao.render(vertices=3)
        self._rows_tex.use(3)
        self._sums_fbo.use()
        ctx.viewport = (0, 0, n, 1)
        self._tile_vao.render(vertices=3)
        raw = np.frombuffer(self._sums_fbo.read(viewport=(0, 0, n, 1), components=2, dtype="u4"),
                            np.uint32).reshape(n, 2)
        return raw[:, 0].astype(np.int64) + (raw[:, 1].astype(np.int64) << 32)

    def release(self) -> None:
        for o in (self._row_vao, self._tile_vao, self._row_prog, self._tile_prog, self._idx_tex,
                  self._rows_fbo, self._sums_fbo, self._rows_tex, self._sums_tex, self._store):
            if o is not None:
                o.release()
