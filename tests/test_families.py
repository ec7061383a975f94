import pytest
import torch

from metavae.data.families import GRIDS, canonical_split, split_values
from metavae.data.transforms import inverse_matrices, transform_images
from metavae.errors import ConfigError

ANGLES = [-180, -160, -140, -120, -100, -80, -60, -40, -20, 0, 20, 40, 60, 80, 100, 120, 140, 160]
SCALES = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9]


def test_grids_exactly_as_paper():
    assert list(GRIDS["rotate"]) == ANGLES
    assert list(GRIDS["shear"]) == ANGLES
    assert list(GRIDS["scale"]) == SCALES


@pytest.mark.parametrize("family", ["rotate", "shear"])
def test_angle_splits(family):
    assert split_values(family, "interleaved") == (
        tuple(float(a) for a in range(-180, 180, 40)), tuple(float(a) for a in range(-160, 180, 40)))
    train, held = split_values(family, "sparse")
    assert train == (-160, -80, 0, 80, 160) and len(held) == 13
    train, held = split_values(family, "contiguous")
    assert train == tuple(float(a) for a in range(-180, 1, 20)) and held == tuple(float(a) for a in range(20, 180, 20))


def test_scale_splits():
    assert split_values("scale", "interleaved") == (
        (0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7, 1.9), (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8))
    train, held = split_values("scale", "sparse")
    assert train == (0.6, 1.0, 1.4, 1.8) and len(held) == 11 and set(train).isdisjoint(held)
    assert split_values("scale", "contiguous") == (tuple(SCALES[:8]), tuple(SCALES[8:]))


def test_split_aliases_and_errors():
    assert canonical_split("standard") == "interleaved"
    assert canonical_split("disjoint") == "contiguous"
    assert split_values("rotate", "standard") == split_values("rotate", "interleaved")
    with pytest.raises(ConfigError, match="unknown split 'random'"):
        split_values("rotate", "random")
    with pytest.raises(ConfigError, match="unknown family"):
        split_values("flip", "sparse")


def _digit() -> torch.Tensor:
    img = torch.zeros(28, 28)
    img[8:20, 10:14] = 1.0  # an asymmetric blob
    img[8:11, 14:19] = 0.8
    return img


def test_rotate_90_is_rot90():
    x = torch.rand(4, 28, 28)
    for angle, k in ((90.0, 1), (-90.0, -1), (180.0, 2), (0.0, 0)):
        out = transform_images(x, "rotate", torch.full((4,), angle))[:, 0]
        torch.testing.assert_close(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_uint8_input_scaled_to_unit_interval():
    x = (torch.rand(2, 28, 28) * 255).to(torch.uint8)
    out = transform_images(x, "rotate", torch.zeros(2))
    torch.testing.assert_close(out[:, 0], x.float() / 255, atol=1e-5, rtol=0)


def test_scale_below_one_enlarges_above_one_shrinks():
    x = _digit()[None].expand(3, -1, -1)
    out = transform_images(x, "scale", torch.tensor([0.5, 1.0, 1.9]))[:, 0]
    torch.testing.assert_close(out[1], x[0], atol=1e-5, rtol=0)
    area = (out > 0.25).sum(dim=(1, 2)).float()
    assert area[0] > 3 * area[1] and area[2] < area[1] / 3
    # s = 0.5: the centred 14x14 crop fills the image; pixel (r, c) shows the original at 7 + (r + 0.5)/2 - 0.5
    torch.testing.assert_close(out[0, 2:26:2, 2:26:2].mean(), x[0, 8:20, 8:20].mean(), atol=0.05, rtol=0)


def test_shear_180_is_vertical_flip_and_differs_from_0():
    x = torch.rand(2, 28, 28)
    out = transform_images(x, "shear", torch.tensor([180.0, 0.0]))[:, 0]
    torch.testing.assert_close(out[0], x[0].flip(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1], atol=1e-5, rtol=0)
    assert (out[0] - x[0]).abs().max() > 0.5


def test_shear_does_not_alias_phi_and_phi_plus_180():
    x = _digit()[None].expand(len(ANGLES), -1, -1)
    out = transform_images(x, "shear", torch.tensor(ANGLES, dtype=torch.float64))[:, 0]
    flat = out.flatten(1)
    dist = torch.cdist(flat, flat)
    off_diag = dist + torch.eye(len(ANGLES)) * 1e9
    assert off_diag.min() > 0.5  # all 18 shear values give different images


def test_shear_matrix_is_inverse_of_paper_forward_map():
    phi = torch.tensor([-160.0, -100.0, 20.0, 80.0, 140.0])
    rad = torch.deg2rad(phi.double())
    forward = torch.zeros(5, 2, 2, dtype=torch.float64)
    forward[:, 0, 0], forward[:, 0, 1], forward[:, 1, 1] = 1.0, -torch.sin(rad), torch.cos(rad)
    theta = inverse_matrices("shear", phi)
    torch.testing.assert_close(theta[:, :, :2] @ forward, torch.eye(2, dtype=torch.float64).expand(5, 2, 2))
    assert theta[:, :, 2].abs().max() == 0  # about the image centre
