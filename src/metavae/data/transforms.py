"""Batched affine image transforms (rotate, scale, shear) with ``affine_grid``/``grid_sample``.

Coordinates are the image's own, centred, with x to the right and y *down*, normalised to
[-1, 1] (``align_corners=False``). ``grid_sample`` needs the map from an output pixel to the
input location it reads, i.e. the *inverse* of the forward transform A: ``p_in = A⁻¹ p_out``.

- rotate θ (degrees): counter-clockwise on screen for θ > 0 (torchvision's convention), so a
  rotation by 90 equals ``torch.rot90(img, 1, dims=(-2, -1))``. Forward A = [[cos θ, sin θ],
  [−sin θ, cos θ]] in y-down coordinates.
- scale s: a centred crop of side s·W resized back to W (zero padding where s > 1), so s < 1
  enlarges the digit and s > 1 shrinks it: p_in = s · p_out. The crop side is continuous
  (torchvision rounded it to whole pixels).
- shear φ (degrees): the forward matrix of torchvision ≤ 0.4, A = [[1, −sin φ], [0, cos φ]]:
  the x axis is fixed and the y axis is turned by φ; φ = ±180 is a vertical flip and φ differs
  from φ ± 180 (the tan-based shear of later torchvision aliases them). Near φ = ±90 the digit
  collapses onto the x axis; A⁻¹ = [[1, tan φ], [0, 1/cos φ]].
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Family = Literal["rotate", "scale", "shear"]


def inverse_matrices(family: str, values: Tensor) -> Tensor:
    """Output→input affine matrices for ``affine_grid``; values ``(n,)`` → ``(n, 2, 3)``."""
    values = values.to(torch.float64)
    n = values.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=values.device)
    if family == "rotate":
        rad = values * (math.pi / 180.0)
        c, s = torch.cos(rad), torch.sin(rad)
        theta[:, 0, 0], theta[:, 0, 1] = c, -s
        theta[:, 1, 0], theta[:, 1, 1] = s, c
    elif family == "scale":
        if bool((values <= 0).any()):
            raise ValueError("scale values must be positive")
        theta[:, 0, 0] = values
        theta[:, 1, 1] = values
    elif family == "shear":
        rad = values * (math.pi / 180.0)
        c, s = torch.cos(rad), torch.sin(rad)
        theta[:, 0, 0] = 1.0
        theta[:, 0, 1] = s / c
        theta[:, 1, 1] = 1.0 / c
    else:
        raise ValueError(f"unknown transformation family {family!r}; expected rotate, scale or shear")
    return theta


def transform_images(images: Tensor, family: str, values: Tensor) -> Tensor:
    """Apply ``family`` with one value per image, batched.

    Args:
        images: ``(n, H, W)`` uint8 grey levels (0..255) or floats in [0, 1].
        family: ``"rotate"``, ``"scale"`` or ``"shear"``.
        values: ``(n,)`` transformation values (degrees or scale factors).

    Returns:
        ``(n, 1, H, W)`` float32 in [0, 1]; bilinear interpolation, zeros outside the image.
    """
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / 255.0
    x = x.unsqueeze(1)  # (n, 1, H, W)
    theta = inverse_matrices(family, values.to(x.device)).to(torch.float32)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (n, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0.0, 1.0)
