"""The batched headless mesh renderer (moderngl + EGL).

``MeshRenderer.render_rays`` draws B ray meshes (162 ray lengths each, a pose and colours) in
one instanced draw into one atlas framebuffer and reads it back once; ``render_meshes`` does
the same for meshes of any topology (the datasets' primitives). Lighting is Lambertian: up to
three directional lights plus ambient, flat normals, two-sided. Every GL object is made once
in ``__init__`` (buffers grow only when a larger batch of general meshes needs it), so memory
does not grow with calls. Batches above ``max_batch`` are drawn in chunks of ``max_batch``.
``rewards_rays`` draws as ``render_rays`` does and scores each tile against its target image
on the GL side (``envs/reward.py``), reading back one number per mesh instead of the images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from envs import shaders
from envs.gl import create_context, describe
from envs.reward import TileRewards
from envs.spaces import loglik_from_sums
from envs.validate import check_array, check_batch, check_colours, check_pose
from envs.validate import (LENGTH_HINT, check_at_most, check_camera, check_lights, check_meshes,
                           check_reach, check_size)
from gen3d import geometry as geo
from gen3d.geometry import Lights  # noqa: F401  (the renderer's lights; defined with the camera)


def _current(method):
    """Run a method with this renderer's context current: a process may hold several
    contexts, and GL calls go to whichever is current. Reentrant: a nested ``with ctx`` would
    leave no context current on its exit."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if getattr(self, "_in_context", False):
            return method(self, *args, **kwargs)
        self._in_context = True
        try:
            with self.ctx:
                return method(self, *args, **kwargs)
        finally:
            self._in_context = False
    return wrapper


@dataclass
class Render:
    """Images of a batch: ``rgb`` (B,H,W,3) uint8, or float32 in [0,1] on request (a view of
    the RGBA read-back: ``np.ascontiguousarray`` it where a packed copy is needed); ``depth``
    (B,H,W) float32 eye-space depth, 0 where nothing was drawn; ``mask`` (B,H,W) bool."""

    rgb: np.ndarray
    depth: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class _Atlas:
    cols: int
    rows: int
    w: int
    h: int


class MeshRenderer:
    """Renders batches of meshes at ``width`` x ``height`` from one camera.

    ``float_colour`` keeps colour in a 32-bit float attachment (no 8-bit quantisation);
    ``cull`` drops back faces, which halves llvmpipe's triangle set-up and is exact for closed
    meshes faced outward (ray meshes with lengths >= 0 always are) seen from outside;
    ``device_index`` picks an EGL device on multi-GPU machines.

    Sizes, camera and lights are checked here, and ``max_batch`` against the limits of this
    GL (texture and framebuffer sides): a ValueError names the limit. ``clip_batch`` lowers a
    ``max_batch`` over the limit to ``batch_limit`` instead (larger batches are drawn in
    chunks either way).
    """

    def __init__(self, width: int = 64, height: int = 64, max_batch: int = 256,
                 camera: geo.Camera | None = None, lights: Lights | None = None,
                 float_colour: bool = False, cull: bool = True, device_index: int | None = None,
                 ctx=None, clip_batch: bool = False):
        self.width, self.height = check_size("width", width), check_size("height", height)
        self.max_batch = check_size("max_batch", max_batch)
        camera = check_camera(geo.Camera() if camera is None else camera)
        lights = check_lights(Lights() if lights is None else lights)
        self.ctx = ctx if ctx is not None else create_context(device_index=device_index)
        self.gl = describe(self.ctx)
        try:
            self.atlas, self._fb_size = self._fit_gl_limits(clip_batch)
        except ValueError:
            if ctx is None:  # a context per failed construction would otherwise leak
                self.ctx.release()
            raise
        self.float_colour = bool(float_colour)
        self.cull = bool(cull)
        self._readback: dict[str, np.ndarray] = {}
        self._tile_rewards: TileRewards | None = None
        self._reducing: _Reduction | None = None
        self._make_gl_objects()
        self.set_camera(camera)
        self.set_lights(lights)

    def _fit_gl_limits(self, clip_batch: bool) -> tuple[_Atlas, tuple[int, int]]:
        """The atlas layout and framebuffer size for ``max_batch`` within this GL's limits."""
        info = self.ctx.info
        tex = int(info["GL_MAX_TEXTURE_SIZE"])
        side = min(int(info["GL_MAX_RENDERBUFFER_SIZE"]), tex, *info["GL_MAX_VIEWPORT_DIMS"])
        for name, v in (("width", self.width), ("height", self.height)):
            if v > side:
                raise ValueError(f"{name}={v} is over this GL's largest framebuffer side of {side} "
                                 f"pixels; lower the resolution")
        self.batch_limit = largest_batch(self.width, self.height, tex, side)
        if self.max_batch > self.batch_limit and clip_batch:
            self.max_batch = self.batch_limit
        if self.max_batch > tex:  # per-mesh data live in textures max_batch rows tall
            raise ValueError(
                f"max_batch={self.max_batch} needs data textures {self.max_batch} rows tall, over "
                f"this GL's GL_MAX_TEXTURE_SIZE limit of {tex}; lower max_batch to at most "
                f"{self.batch_limit} (larger batches are drawn in chunks of max_batch anyway)")
        layout = atlas_layout(self.max_batch, self.width, self.height, side)
        if layout is None:
            raise ValueError(
                f"max_batch={self.max_batch} tiles of {self.width}x{self.height} need a framebuffer "
                f"over this GL's limit of {side} pixels a side; lower max_batch to at most "
                f"{self.batch_limit} or the resolution")
        return layout

    # ------------------------------------------------------------------ GL set-up

    @_current
    def _make_gl_objects(self) -> None:
        ctx, a = self.ctx, self.atlas
        size = self._fb_size
        # a texture, not a renderbuffer: the reward passes read it where it was drawn
        self._colour = ctx.texture(size, 4, dtype="f4" if self.float_colour else "f1")
        self._colour.filter = (0x2600, 0x2600)
        self._depth_rb = ctx.renderbuffer(size, 1, dtype="f4")
        self._zbuf = ctx.depth_renderbuffer(size)
        self.fbo = ctx.framebuffer([self._colour, self._depth_rb], self._zbuf)
        self._colour_fbo = ctx.framebuffer([self._colour], self._zbuf)
        self.ray_prog = ctx.program(vertex_shader=shaders.RAY_VS, geometry_shader=shaders.GS,
                                    fragment_shader=shaders.FS)
        self.mesh_prog = ctx.program(vertex_shader=shaders.MESH_VS, geometry_shader=shaders.GS,
                                     fragment_shader=shaders.FS)
        # ray meshes: indexed draw of the icosphere's faces; no vertex attributes at all
        self._ibo = ctx.buffer(geo.ico_faces().astype(np.int32).tobytes())
        self.ray_vao = ctx.vertex_array(self.ray_prog, [], index_buffer=self._ibo, index_element_size=4)
        bm = self.max_batch
        rays = geo.ico_rays().astype(np.float32).tobytes()
        self._rays_tex = ctx.texture((geo.N_RAYS, 1), 3, rays, dtype="f4")
        self._len_tex = ctx.texture((geo.N_RAYS, bm), 1, dtype="f4")
        self._pose_tex = ctx.texture((3, bm), 4, dtype="f4")
        self._vcol_tex = ctx.texture((geo.N_RAYS, bm), 3, dtype="f4")
        self._fcol_tex = ctx.texture((geo.N_FACES, bm), 3, dtype="f4")
        for t in (self._rays_tex, self._len_tex, self._pose_tex, self._vcol_tex, self._fcol_tex):
            t.filter = (0x2600, 0x2600)  # GL_NEAREST: texelFetch only, but keep it complete
        self._mesh_vbo = None
        self._mesh_vao = None
        self._mesh_cap = 0
        for p in (self.ray_prog, self.mesh_prog):
            _set(p, "grid", (a.cols, a.rows))
            _set(p, "tile_px", (float(a.w), float(a.h)))
            _set(p, "atlas_px", tuple(float(x) for x in self._fb_size))
        for name, unit in (("rays", 0), ("lengths", 1), ("poses", 2), ("vcolours", 3), ("fcolours", 4)):
            _set(self.ray_prog, name, unit)
        _set(self.mesh_prog, "per_face", 0)

    @_current
    def set_camera(self, camera: geo.Camera) -> None:
        self.camera = camera = check_camera(camera)
        view = camera.view().astype(np.float32)
        proj = camera.projection(self.width / self.height).astype(np.float32)
        for p in (self.ray_prog, self.mesh_prog):
            # GLSL matrices are column-major
            _set(p, "view", view.T)
            _set(p, "proj", proj.T)
        for p in (self.ray_prog, self.mesh_prog):
            _set(p, "eye", tuple(float(x) for x in camera.eye))

    @_current
    def set_lights(self, lights: Lights) -> None:
        self.lights = lights = check_lights(lights)
        d, c, amb = lights.arrays()
        for p in (self.ray_prog, self.mesh_prog):
            _set(p, "light_dir", d)
            _set(p, "light_rgb", c)
            _set(p, "ambient", tuple(float(x) for x in amb))

    # ------------------------------------------------------------------ drawing

    @_current
    def render_rays(self, lengths, rotation=None, translation=None, colours=None, scale=None,
                    depth: bool = False, mask: bool = False, as_float: bool = False,
                    reuse: bool = False) -> Render:
        """Render B ray meshes: vertex i of mesh b at ``R_b (s_b * lengths[b,i] * ray_i) + t_b``.

        lengths (B,162) in [0, MAX_LENGTH]; rotation (B,3) axis-angle (any finite value: a
        rotation is periodic) or (B,3,3) matrices (default identity); translation (B,3) in
        [-MAX_TRANSLATION, MAX_TRANSLATION] (default 0); colours (B,162,3) per vertex, (B,320,3)
        per face or (B,3) one per mesh, in [0,1] (default grey); scale (B,) > 0 (default 1),
        with ``scale * lengths <= MAX_LENGTH``. The bounds are the action space's
        (``envs/spaces.py``): values outside them, NaN or inf raise a ValueError naming the
        argument (geometry that far off would draw a black image).

        ``reuse=True`` (B <= max_batch) returns views of read-back memory that this renderer
        keeps and overwrites on its next ``reuse`` call: for callers that consume the images at
        once. It saves the page faults of fresh memory, which on a GPU cost more than the draw
        (about 10 ms a call at B=1024, 64x64).
        """
        lengths = check_array("lengths", lengths, (None, geo.N_RAYS), nonneg=True)
        check_at_most("lengths", lengths, geo.MAX_LENGTH, LENGTH_HINT)
        b = check_batch("lengths", lengths)
        poses = check_pose(b, rotation, translation, scale)
        if scale is not None:  # unscaled, the lengths' own bound is the mesh's reach
            check_reach(lengths.max(1), scale)
        cols, per_face = check_colours(b, colours, (geo.N_RAYS, geo.N_FACES))
        reuse = reuse and b <= self.max_batch
        parts = []
        for s in range(0, b, self.max_batch):
            e = min(b, s + self.max_batch)
            n = e - s
            self._len_tex.write(lengths[s:e].tobytes(), viewport=(0, 0, geo.N_RAYS, n))
            self._pose_tex.write(poses[s:e].tobytes(), viewport=(0, 0, 3, n))
            tex = self._fcol_tex if per_face else self._vcol_tex
            tex.write(cols[s:e].tobytes(), viewport=(0, 0, cols.shape[1], n))
            self._rays_tex.use(0)
            self._len_tex.use(1)
            self._pose_tex.use(2)
            self._vcol_tex.use(3)
            self._fcol_tex.use(4)
            _set(self.ray_prog, "per_face", int(per_face))
            self._begin(n)
            self.ray_vao.render(instances=n)
            parts.append(self._read(n, depth, mask, as_float, reuse))
        return _concat(parts)

    @_current
    def render_meshes(self, meshes, colours=None, rotation=None, translation=None, scale=None,
                      depth: bool = False, mask: bool = False, as_float: bool = False) -> Render:
        """Render B meshes of any topology (``geometry.Mesh`` or (verts, faces) pairs).

        colours: per mesh, (F,3) per face, (n_sides,3) one per side (``Mesh.side_ids``) or (3,);
        default grey. Poses as in ``render_rays``; a mesh's vertices, scaled, lie within
        MAX_LENGTH of its origin.
        """
        meshes = check_meshes(meshes)
        b = len(meshes)
        poses = check_pose(b, rotation, translation, scale)
        check_reach(np.array([np.linalg.norm(m.verts, axis=1).max() for m in meshes]), scale)
        if colours is None:
            colours = [np.full(3, 0.7, np.float32)] * b
        if len(colours) != b:
            raise ValueError(f"colours: need one entry per mesh ({b}), got {len(colours)}")
        parts = []
        for s in range(0, b, self.max_batch):
            e = min(b, s + self.max_batch)
            data = [self._mesh_corners(meshes[i], colours[i], poses[i], i - s) for i in range(s, e)]
            self._upload_meshes(np.concatenate(data))
            self._begin(e - s)
            self._mesh_vao.render(vertices=sum(len(d) for d in data))
            parts.append(self._read(e - s, depth, mask, as_float))
        return _concat(parts)

    def _mesh_corners(self, m: geo.Mesh, colour, pose: np.ndarray, tile: int) -> np.ndarray:
        v = check_array("mesh vertices", m.verts, (None, 3))
        if len(m.faces) == 0 or m.faces.min() < 0 or m.faces.max() >= len(v):
            raise ValueError("mesh faces: need at least one face, each indexing a vertex")
        c = check_array("colours", colour, None, unit=True)
        if c.shape == (3,):
            c = np.broadcast_to(c, (len(m.faces), 3))
        elif c.shape == (m.n_sides, 3) and c.shape[0] != len(m.faces):
            c = c[m.side_ids]
        if c.shape != (len(m.faces), 3):
            raise ValueError(f"colours: a mesh with {len(m.faces)} faces and {m.n_sides} sides "
                             f"needs (3,), ({m.n_sides},3) or ({len(m.faces)},3); got {c.shape}")
        w = v @ pose[:, :3].T + pose[:, 3]
        corners = w[m.faces]  # (F,3,3)
        out = np.empty((len(m.faces), 3, 7), np.float32)
        out[..., 0:3] = corners
        out[..., 3:6] = c[:, None]
        out[..., 6] = tile
        return out.reshape(-1, 7)

    def _upload_meshes(self, data: np.ndarray) -> None:
        nbytes = data.nbytes
        if nbytes > self._mesh_cap:
            if self._mesh_vao is not None:
                self._mesh_vao.release()
                self._mesh_vbo.release()
            self._mesh_cap = max(nbytes, 2 * self._mesh_cap, 1 << 16)
            self._mesh_vbo = self.ctx.buffer(reserve=self._mesh_cap)
            self._mesh_vao = self.ctx.vertex_array(
                self.mesh_prog, [(self._mesh_vbo, "3f 3f 1f", "pos", "colour", "tile")])
        self._mesh_vbo.write(data.tobytes())

    def _used(self, n: int) -> tuple[int, int]:
        """Width and height of the atlas region the first n tiles cover."""
        cols = min(n, self.atlas.cols)
        rows = -(-n // self.atlas.cols)
        return cols * self.width, rows * self.height

    def _begin(self, n: int) -> None:
        w, h = self._used(n)
        # draw only over the region in use (llvmpipe bins the whole viewport); power-of-two
        # sides keep the shader's pixel -> NDC mapping exact
        vp = (_pow2(w), _pow2(h))
        # rewards need colour only: no eye-depth attachment to write (a few % of the draw)
        fbo = self._colour_fbo if self._reducing is not None else self.fbo
        fbo.use()
        self.ctx.viewport = (0, 0) + vp
        for p in (self.ray_prog, self.mesh_prog):
            _set(p, "atlas_px", (float(vp[0]), float(vp[1])))
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0, viewport=(0, 0, w, h))
        self.ctx.enable(self.ctx.DEPTH_TEST)
        if self.cull:
            self.ctx.enable(self.ctx.CULL_FACE)
            self.ctx.front_face = "cw"  # tiles are drawn mirrored in y (see shaders)
        else:
            self.ctx.disable(self.ctx.CULL_FACE)

    def _buffer(self, key: str, shape: tuple, dtype, reuse: bool) -> np.ndarray:
        """A fresh array, or (reuse) a view of one kept per key at the full atlas size."""
        if not reuse:
            return np.empty(shape, dtype)
        size = int(np.prod(shape))
        buf = self._readback.get(key)
        if buf is None or buf.dtype != dtype:
            c = shape[-1]
            buf = self._readback[key] = np.empty(self._fb_size[0] * self._fb_size[1] * c, dtype)
        return buf[:size].reshape(shape)

    def _read(self, n: int, depth: bool, mask: bool, as_float: bool, reuse: bool = False) -> Render:
        red = self._reducing
        if red is not None:
            red.sums.append(self._tile_rewards.tile_sums(red.idx[red.done:red.done + n]))
            red.done += n
            if not red.images:
                self._check_error()
                return Render(None)
        w, h = self._used(n)
        rows = h // self.atlas.h
        dt = np.float32 if self.float_colour else np.uint8
        # RGBA straight from GL into a fresh array, RGB a view of it: GL converts to 3
        # components on the CPU (20x slower than the RGBA read on llvmpipe), and dropping
        # alpha with a copy cost more than the whole draw on a GPU
        raw = self._buffer("rgba", (h, w, 4), dt, reuse)
        self.fbo.read_into(raw, viewport=(0, 0, w, h), components=4,
                           dtype="f4" if self.float_colour else "f1")
        rgb = _untile(raw, rows, self.atlas, n)[..., :3]
        if as_float and not self.float_colour:
            rgb = rgb.astype(np.float32) * np.float32(1 / 255)
        elif self.float_colour and not as_float:
            rgb = (np.clip(rgb, 0, 1) * 255.0 + 0.5).astype(np.uint8)
        out = Render(rgb)
        if mask or depth:  # eye depth is > 0 wherever a surface was drawn, 0 elsewhere
            d = self._buffer("depth", (h, w, 1), np.float32, reuse)
            self.fbo.read_into(d, viewport=(0, 0, w, h), components=1, dtype="f4", attachment=1)
            d = _untile(d, rows, self.atlas, n)[..., 0]
            out.depth = d if depth else None
            out.mask = d > 0 if mask else None
        self._check_error()
        return out

    def _check_error(self) -> None:
        err = self.ctx.error
        if err != "GL_NO_ERROR":
            raise RuntimeError(f"OpenGL reported {err} while rendering; the images are not valid")

    # ------------------------------------------------------------------ rewards on the GL side

    def _rewards(self) -> TileRewards:
        if self.float_colour:
            raise ValueError("GL-side rewards compare 8-bit images: make the renderer with "
                             "float_colour=False, or compute rewards in numpy (reward='numpy')")
        if self._tile_rewards is None:  # callers hold the context current
            self._tile_rewards = TileRewards(self.ctx, self._colour, self.atlas.cols,
                                             self.width, self.height, self.max_batch)
        return self._tile_rewards

    @property
    def targets(self) -> np.ndarray | None:
        """The target images on the GL side (the array given to ``set_targets``), or None."""
        return None if self._tile_rewards is None else self._tile_rewards.source

    @_current
    def set_targets(self, images) -> None:
        """Upload target images (N,H,W,3) uint8 to the GL side once, for ``rewards_rays``."""
        self._rewards().set_targets(images)

    @_current
    def rewards_rays(self, target_idx, sigma: float, lengths, rotation=None, translation=None,
                     colours=None, scale=None, images: bool = False) -> tuple[np.ndarray, Render]:
        """Draw ray meshes as ``render_rays`` does and score each against target image
        ``target_idx[b]`` (of ``set_targets``) on the GL side: the Gaussian log-likelihood of
        ``envs.spaces.gaussian_loglik``, (B,) float64 nats. Only those B numbers are read back;
        the images too when ``images`` (then ``Render.rgb`` is the renderer's reused memory)."""
        if not (isinstance(sigma, (int, float, np.number)) and np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma: the pixel noise must be a finite number > 0, got {sigma!r}")
        lengths = check_array("lengths", lengths, (None, geo.N_RAYS), nonneg=True)
        idx = self._rewards().check_idx(target_idx, len(lengths))
        self._reducing = _Reduction(idx, bool(images))
        try:
            out = self.render_rays(lengths, rotation, translation, colours, scale, reuse=True)
            sums = np.concatenate(self._reducing.sums)
        finally:
            self._reducing = None
        return loglik_from_sums(sums, self.width * self.height * 3, float(sigma)), out

    def release(self) -> None:
        """Free every GL object and the context (when this renderer made it)."""
        self.ctx.release()


@dataclass
class _Reduction:
    """A ``rewards_rays`` call in progress: ``_read`` reduces each drawn chunk of tiles
    against targets ``idx[done:]`` instead of (or before) reading the images back."""

    idx: np.ndarray
    images: bool
    done: int = 0
    sums: list = field(default_factory=list)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _set(prog, name: str, value) -> None:
    """Set a uniform if the compiled program kept it (drivers drop unused ones)."""
    if name in prog:
        if isinstance(value, np.ndarray):
            prog[name].write(np.ascontiguousarray(value, np.float32).tobytes())
        else:
            prog[name].value = value


def _untile(atlas: np.ndarray, rows: int, a: _Atlas, n: int) -> np.ndarray:
    """(rows*H, cols*W, C) atlas, read bottom-up, of tiles drawn upside down -> (n, H, W, C)
    images with row 0 at the top: a view for one column of tiles, else one copy."""
    cols = atlas.shape[1] // a.w
    c = atlas.shape[-1]
    if cols == 1:
        return atlas.reshape(rows, a.h, a.w, c)[:n]
    view = atlas.reshape(rows, a.h, cols, a.w, c).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(view).reshape(rows * cols, a.h, a.w, c)[:n]


def _concat(parts: list[Render]) -> Render:
    if len(parts) == 1:
        return parts[0]
    def cat(k):
        return None if getattr(parts[0], k) is None else np.concatenate([getattr(p, k) for p in parts])
    return Render(cat("rgb"), cat("depth"), cat("mask"))


def atlas_layout(n: int, w: int, h: int, side: int) -> tuple[_Atlas, tuple[int, int]] | None:
    """Tiles of n images w x h in one framebuffer no larger than ``side`` a side, and its
    power-of-two size (the shader's pixel -> NDC mapping is then exact); None if none fits."""
    # one column of tiles when it fits: the read-back is then the batch itself, no copy
    if n * h <= side:
        cols = 1
    else:
        cols = max(1, min(int(np.ceil(np.sqrt(n))), side // w))
    rows = int(np.ceil(n / cols))
    fb = (_pow2(cols * w), _pow2(rows * h))
    return None if max(fb) > side else (_Atlas(cols, rows, w, h), fb)


def largest_batch(w: int, h: int, texture_side: int, side: int) -> int:
    """The largest ``max_batch`` that GL's limits allow at w x h: data textures ``max_batch``
    rows tall, an atlas within ``side``; 0 when not even one tile fits."""
    lo, hi = 0, texture_side
    while lo < hi:  # the atlas grows with n: bisect for the last n that fits
        mid = (lo + hi + 1) // 2
        if atlas_layout(mid, w, h, side) is None:
            hi = mid - 1
        else:
            lo = mid
    return lo
