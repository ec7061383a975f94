"""Batched affine image transforms (rotate, scale, shear) with ``affine_grid``/``grid_sample``.

Transforms are defined in the image's own *pixel* coordinates, centred, with x to the right
and y *down*. ``grid_sample`` needs the map from an output pixel to the input location it reads,
i.e. the *inverse* of the forward transform A: ``p_in = A⁻¹ p_out``. ``affine_grid`` works in
coordinates normalised to [-1, 1] on each axis (``align_corners=False``), i.e. ``p_pix = S p_norm``
with ``S = diag(W/2, H/2)``, so the matrix it is given is ``S⁻¹ A⁻¹ S``: off-diagonal entries are
rescaled by H/W and W/H. For square images S is a multiple of the identity and the normalised
and pixel matrices coincide; for an H ≠ W image a rotation stays a rigid rotation of the pixels
(in normalised coordinates it would shear the image).

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

__all__ = ["Family", "inverse_matrices", "transform_images"]


def inverse_matrices(family: str, values: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Output→input affine matrices for ``affine_grid``; values ``(n,)`` → ``(n, 2, 3)`` float64.

    ``size = (H, W)`` of the images (default square): the matrices act on normalised coordinates
    of an H×W image and are the pixel-space transforms conjugated by ``S = diag(W/2, H/2)``.
    """
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
            raise ValueError(f"values: scale factors must be positive, got {values.min().item():g}")
        theta[:, 0, 0] = values
        theta[:, 1, 1] = values
    elif family == "shear":
        rad = values * (math.pi / 180.0)
        c, s = torch.cos(rad), torch.sin(rad)
        theta[:, 0, 0] = 1.0
        theta[:, 0, 1] = s / c
        theta[:, 1, 1] = 1.0 / c
    else:
        raise ValueError(f"family: unknown transformation family {family!r}; expected rotate, scale or shear")
    if size is not None:
        h, w = size
        theta[:, 0, 1] *= h / w  # S⁻¹ M S with S = diag(W/2, H/2)
        theta[:, 1, 0] *= w / h
    return theta


def transform_images(images: Tensor, family: str, values: Tensor) -> Tensor:
    """Apply ``family`` with one value per image, batched.

    Args:
        images: ``(n, H, W)`` uint8 grey levels (0..255) or floats in [0, 1]; H may differ from W.
        family: ``"rotate"``, ``"scale"`` or ``"shear"``.
        values: ``(n,)`` tensor of transformation values (degrees or scale factors).

    Returns:
        ``(n, 1, H, W)`` float32 in [0, 1]; bilinear interpolation, zeros outside the image.

    Raises:
        ValueError: naming the argument, for a wrong shape or dtype, a non-tensor, non-finite
            values, non-positive scale factors or an unknown family.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"images: expected a tensor of shape (n, H, W), got {type(images).__name__}")
    if images.dim() != 3:
        hint = "; drop the channel axis (images[:, 0])" if images.dim() == 4 and images.shape[1] == 1 else ""
        raise ValueError(f"images: expected shape (n, H, W), got {tuple(images.shape)}{hint}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images: expected uint8 grey levels or floats in [0, 1], got dtype {images.dtype}")
    if not isinstance(values, Tensor):
        raise ValueError(f"values: expected a tensor of shape ({images.shape[0]},), one value per image, got "
                         f"{type(values).__name__} (for one value for all: torch.full(({images.shape[0]},), value))")
    if values.shape != (images.shape[0],):
        raise ValueError(f"values: expected shape ({images.shape[0]},), one value per image, got {tuple(values.shape)}")
    if values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"values: expected real numbers, got dtype {values.dtype}")
    if values.numel() and not bool(torch.isfinite(values).all()):
        raise ValueError("values: expected finite numbers, got NaN or ±inf")
    if images.shape[0] == 0:
        return images.new_zeros((0, 1, *images.shape[1:]), dtype=torch.float32)
    if images.is_floating_point() and images.device.type != "meta":
        lo, hi = float(images.min()), float(images.max())
        if not (0.0 <= lo and hi <= 1.0):  # also refuses NaN
            raise ValueError(f"images: float images must lie in [0, 1] (grey levels), got range [{lo:g}, {hi:g}]")
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / 255.0
    x = x.unsqueeze(1)  # (n, 1, H, W)
    # matrices in float64 on the CPU (not every device has float64), then float32 on the images' device
    theta = inverse_matrices(family, values.cpu(), size=tuple(images.shape[1:])).to(x.device, torch.float32)  # type: ignore[arg-type]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (n, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0.0, 1.0)
