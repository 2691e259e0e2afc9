"""The colour orders against the renderer, lit as the data are (grey lights: a swap of the
albedos' channels is a swap of the image's), and the group they make with the camera's mirrors:
its images, its maps and their inverses, and the answer averaged over it."""

import numpy as np
import pytest
import torch

from envs import spaces
from gen3d import camera_mirrors as cm
from gen3d.image_symmetries import COLOUR_ORDERS, ImageSymmetries, order_images
from gen3d.mesh_model import MeshDecoder, MeshModelConfig

VARIANTS = [{}, {"shape": "raw", "colour": "raw"}, {"colour": "uniform", "rotation": True},
            {"colour": "palette", "shape_degree": 4}]


def render(r, decoder, m):
    with torch.no_grad():
        return r.render_rays(**spaces.unpack(decoder(m).numpy())).rgb


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(map(str, v.values())) or "main")
def test_a_mesh_with_its_colours_in_another_order_renders_as_the_image_in_that_order(renderer, variant):
    dec = MeshDecoder(MeshModelConfig(**variant))
    sym = ImageSymmetries(dec, mirrors=False, colour_orders=True)
    gen = torch.Generator().manual_seed(1)
    m = 0.4 * torch.randn(6, dec.dim, generator=gen)
    colour = dec.slices["colour"]
    m[:, colour] = 2 * torch.randn(6, colour.stop - colour.start, generator=gen)  # vivid colours
    rgb = render(renderer, dec, m)
    for o in range(1, len(COLOUR_ORDERS)):
        g = torch.full((6,), o)
        got = render(renderer, dec, sym.to_frame(m, g))
        want = order_images(torch.from_numpy(rgb).permute(0, 3, 1, 2), g).permute(0, 2, 3, 1)
        assert np.abs(got.astype(int) - want.numpy().astype(int)).max() <= 1, COLOUR_ORDERS[o]
        assert np.abs(got.astype(int) - rgb.astype(int)).max() > 50  # the order mattered


def test_each_element_is_a_mirror_after_a_colour_order_and_back_undoes_it():
    dec = MeshDecoder(MeshModelConfig())
    sym = ImageSymmetries(dec, mirrors=True, colour_orders=True)
    assert len(sym) == 24 and len(set(sym.names)) == 24
    x = torch.rand(24, 3, 5, 5)
    g = torch.arange(24)
    shown = sym.images(x, g)
    for k in range(24):
        o, mirror = COLOUR_ORDERS[k // 4], k % 4
        want = cm.mirror_images(x[k:k + 1, list(o)], torch.tensor([mirror]))
        torch.testing.assert_close(shown[k:k + 1], want, rtol=0, atol=0)
    m = torch.randn(24, 2, dec.dim)
    torch.testing.assert_close(sym.back(sym.to_frame(m, g), g), m, atol=1e-5, rtol=0)
    # an order of three channels is not its own inverse: ``back`` must not be ``to_frame``
    cyclic = [k for k in range(24) if COLOUR_ORDERS[k // 4] in ((1, 2, 0), (2, 0, 1))]
    assert all((sym.maps[k] @ sym.maps[k] - torch.eye(dec.dim)).abs().max() > 0.5 for k in cyclic)
    only = ImageSymmetries(dec, mirrors=False, colour_orders=True)
    assert len(only) == 6
    torch.testing.assert_close(only.images(x[:6], g[:6]), torch.stack(
        [x[k, list(COLOUR_ORDERS[k])] for k in range(6)]))


def test_the_mirrors_alone_are_the_camera_mirrors_maps():
    dec = MeshDecoder(MeshModelConfig(rotation=True))
    sym = ImageSymmetries(dec)
    assert sym.names == list(cm.NAMES)
    assert torch.equal(sym.maps, cm.parameter_maps(dec))
    assert torch.equal(sym.inverse, sym.maps)  # each mirror is its own inverse
    with pytest.raises(ValueError, match="mirrors, the colour orders or both"):
        ImageSymmetries(dec, mirrors=False)


def test_the_answer_averaged_over_the_24_is_exactly_equivariant():
    """Any network: the answer to an image under any element of the group is that element's
    map of the answer to the image itself (the plain network's is not)."""
    from gen3d.mesh_model import MeshModel

    torch.manual_seed(0)
    model = MeshModel(MeshModelConfig(hidden=16, channels=4, infer_mirrors=True,
                                      infer_colour_orders=True), 32)
    with torch.no_grad():
        model.write.weight.normal_(0, 0.3)
    sym = model.symmetries
    assert model.looks(torch.rand(2, 3, 32, 32)).shape == (24, 2, model.decoder.dim)
    x = torch.rand(3, 3, 32, 32)
    for k in (5, 11, 18, 23):
        g = torch.full((3,), k)
        torch.testing.assert_close(model.answer(sym.images(x, g)), sym.to_frame(model.answer(x), g),
                                   atol=1e-5, rtol=1e-4)
        plain = model.mean_params(sym.images(x, g)) - sym.to_frame(model.mean_params(x), g)
        assert plain.abs().max() > 1e-2


def test_the_mirrors_alone_keep_the_images_memory_layout():
    """The encoder's convolutions sum in the order the images' layout gives: a group without
    the colour orders must not copy the images into another layout, or the committed config's
    runs would no longer give their recorded weights bit for bit."""
    from gen3d.mesh_model import images_to_tensor

    x = images_to_tensor(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    sym = ImageSymmetries(MeshDecoder(MeshModelConfig()))
    assert sym.images(x, torch.arange(4)).stride() == x.stride()
