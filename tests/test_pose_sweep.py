"""The pose sweep of ``benchmarks/pose_sweep.py`` finds the pose when the shape is right: a
cube's ray mesh in its own frame, with a colour per octant, drawn at a known turn, is found at
that turn among random candidates, and without it only as near as the nearest candidate."""

import numpy as np

from benchmarks.pose_sweep import best_rotations
from gen3d import geometry as geo
from gen3d import primitives as prim
from gen3d import symmetry


def _scene(kind: str, rotations: np.ndarray):
    m = prim.primitive(kind)
    lengths = np.repeat(geo.ray_lengths_of_mesh(m.verts, m.faces)[None], len(rotations), 0).astype(np.float32)
    rays = geo.ico_rays()
    colours = np.repeat((0.5 + 0.4 * np.sign(rays))[None].astype(np.float32), len(rotations), 0)  # sides
    trans = np.tile(np.array([[0.1, -0.05, 0.0]], np.float32), (len(rotations), 1))
    return {"lengths": lengths, "translation": trans, "colours": colours}


def test_the_sweep_finds_a_cubes_turn_among_random_ones(renderer):
    rng = np.random.default_rng(3)
    truth = geo.random_rotation(rng, 4)
    parts = _scene("cube", truth)
    images = renderer.render_rays(parts["lengths"], geo.matrix_to_axis_angle(truth).astype(np.float32),
                                  parts["translation"], parts["colours"]).rgb
    renderer.set_targets(images)
    cands = np.concatenate([geo.random_rotation(rng, 60), truth])
    got = best_rotations(renderer, parts, cands, 0.1)
    err = symmetry.rotation_error_deg(truth, got, "cube")
    assert (err < 1.0).all(), err
    # without the true turns among the candidates the nearest random one is far off
    far = best_rotations(renderer, parts, cands[:60], 0.1)
    assert (symmetry.rotation_error_deg(truth, far, "cube") > 3.0).all()
