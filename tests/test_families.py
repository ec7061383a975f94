import math

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


# --------------------------------------------------------------------------- non-square images and bad input
def test_rotation_of_a_non_square_image_is_rigid_in_pixels():
    """A 2×2 block 6 px right of the centre of a 20×40 image, rotated 90° counter-clockwise, lands
    6 px *above* the centre (exactly: the grid maps pixel centres onto pixel centres). Built in
    normalised coordinates the rotation would move it by 6·20/40 = 3 rows only."""
    image = torch.zeros(1, 20, 40)
    image[0, 9:11, 25:27] = 1.0  # centre (9.5, 19.5) + (0, 6): rows 9-10, columns 25-26
    out = transform_images(image, "rotate", torch.tensor([90.0]))[0, 0]
    expected = torch.zeros(20, 40)
    expected[3:5, 19:21] = 1.0  # (9.5 − 6, 19.5): rows 3-4, columns 19-20
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_shear_matrix_of_a_non_square_image_is_the_pixel_space_shear():
    """In pixel offsets (dx, dy) the inverse shear is [[1, tan φ], [0, 1/cos φ]]; the normalised
    matrix must reproduce it for an H×W image, where p_pix = (W/2·x_n, H/2·y_n)."""
    h, w, phi = 20, 40, 30.0
    theta = inverse_matrices("shear", torch.tensor([phi]), size=(h, w))[0, :, :2]
    t = math.radians(phi)
    for dx, dy in ((3.0, 0.0), (0.0, 4.0), (-2.0, 5.0)):
        normalised = theta @ torch.tensor([dx / (w / 2), dy / (h / 2)], dtype=torch.float64)
        pixels = torch.stack([normalised[0] * w / 2, normalised[1] * h / 2])
        torch.testing.assert_close(pixels, torch.tensor([dx + math.tan(t) * dy, dy / math.cos(t)], dtype=torch.float64))


def test_square_images_are_transformed_as_before():
    """For H = W the pixel and normalised matrices coincide (the paper's 28×28 results are unchanged)."""
    values = torch.tensor([-160.0, 35.0, 90.0])
    for family in ("rotate", "shear"):
        torch.testing.assert_close(inverse_matrices(family, values, size=(28, 28)), inverse_matrices(family, values))


@pytest.mark.parametrize(
    "images, values, message",
    [
        (torch.zeros(4, 1, 28, 28), torch.zeros(4), r"images: expected shape \(n, H, W\), got \(4, 1, 28, 28\); drop the channel"),
        (torch.zeros(28, 28), torch.zeros(28), r"images: expected shape \(n, H, W\), got \(28, 28\)"),
        ([[0.0]], torch.zeros(1), r"images: expected a tensor of shape \(n, H, W\), got list"),
        (torch.zeros(2, 5, 5, dtype=torch.int64), torch.zeros(2), r"images: expected uint8 grey levels or floats .* got dtype torch.int64"),
        (torch.zeros(3, 5, 5), 30.0, r"values: expected a tensor of shape \(3,\), one value per image, got float"),
        (torch.zeros(3, 5, 5), torch.zeros(2), r"values: expected shape \(3,\), one value per image, got \(2,\)"),
        (torch.zeros(3, 5, 5), torch.tensor([0.0, float("nan"), 1.0]), r"values: expected finite numbers"),
        (torch.zeros(2, 5, 5), torch.tensor([True, False]), r"values: expected real numbers, got dtype torch.bool"),
    ],
)
def test_bad_transform_input_is_a_value_error_naming_the_argument(images, values, message):
    with pytest.raises(ValueError, match=message):
        transform_images(images, "rotate", values)


def test_bad_family_or_scale_is_a_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="family: unknown transformation family 'blur'"):
        transform_images(torch.zeros(1, 5, 5), "blur", torch.zeros(1))
    with pytest.raises(ValueError, match="values: scale factors must be positive, got -1"):
        transform_images(torch.zeros(2, 5, 5), "scale", torch.tensor([1.0, -1.0]))


def test_float_images_outside_grey_levels_and_empty_batches():
    with pytest.raises(ValueError, match=r"images: float images must lie in \[0, 1\] \(grey levels\), got range \[0, 2\]"):
        transform_images(torch.tensor([[[0.0, 2.0]]]), "rotate", torch.zeros(1))
    empty = transform_images(torch.zeros(0, 5, 7, dtype=torch.uint8), "shear", torch.zeros(0))
    assert empty.shape == (0, 1, 5, 7) and empty.dtype == torch.float32
