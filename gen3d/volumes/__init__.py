"""Differentiable half of gen3d: the volumetric spatial transformer (``vst``), the sequential
generative model (``model``), its contexts, bounds and 3D completion.

Kept light: importing this package does not import torch; import the submodules.
"""
