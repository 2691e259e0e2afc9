"""gen3d: unsupervised learning of 3D structure from images (after Rezende et al., 2016).

Kept light on purpose: importing ``gen3d`` or ``gen3d.geometry`` does not import torch, so a
render worker that only needs geometry does not pay for it.
"""

__version__ = "0.1.0"
