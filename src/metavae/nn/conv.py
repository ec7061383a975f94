"""Convolutional parts (paper §2, the smallNORB models): an image encoder, a residual MLP head and
transposed-convolution decoders, injected into any model through its ``x_encoder``, set-encoder
element network, inference network and decoder (:mod:`metavae.models.backbones`).

Shapes: images ``(P, C, H, W)`` with any H, W ≥ 1 (the sizes come from the data: 1×28×28, 1×32×32);
features ``(P, F)``; latents ``(…, in_features)``; decoder outputs flattened logits
``(…, C·H·W)``.

Batch normalisation: in training mode every call normalises by the statistics of the rows of
*that call*, so the trainer's separate calls (the queries; the shared context pool) never mix a
query with its own context; in eval mode (validation, IWAE, the probe, ``representation``) the
running statistics are used and every example's output depends on that example alone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from metavae.nn.mlp import make_activation

__all__ = ["ConvEncoder", "ResidualMLP", "ConvDecoder", "GroupedDecoder", "downsampled_sizes",
           "batch_norm_statistics_frozen"]


def downsampled_sizes(size: int, stages: int) -> list[int]:
    """``[size, ⌈size/2⌉, ⌈size/4⌉, …]``, ``stages + 1`` entries: the side after each stride-2 conv3×3
    with padding 1 (28 → 14 → 7 → 4; 32 → 16 → 8 → 4)."""
    out = [int(size)]
    for _ in range(stages):
        out.append((out[-1] - 1) // 2 + 1)
    return out


class ConvEncoder(nn.Module):
    """Stages of ``layers_per_stage`` conv3×3 + BatchNorm + ELU; the last conv of each stage has
    stride 2. The paper's encoder is ``channels=(64, 128, 256)``, 3 layers per stage: nine convs
    (64, 64, 64↓, 128, 128, 128↓, 256, 256, 256↓), 32×32 → 256×4×4 = 4096 features.

    Args:
        event_shape: ``(C, H, W)`` of one image.
        channels: output channels of each stage.
        layers_per_stage: convs per stage (≥ 1).
    """

    def __init__(self, event_shape: Sequence[int], channels: Sequence[int] = (64, 128, 256), layers_per_stage: int = 3) -> None:
        super().__init__()
        c, h, w = (int(s) for s in event_shape)
        layers: list[nn.Module] = []
        for width in channels:
            for i in range(layers_per_stage):
                stride = 2 if i == layers_per_stage - 1 else 1
                layers += [nn.Conv2d(c, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width), nn.ELU()]
                c = width
        self.net = nn.Sequential(*layers)
        self.output_shape = (c, downsampled_sizes(h, len(channels))[-1], downsampled_sizes(w, len(channels))[-1])
        self.out_features = math.prod(self.output_shape)

    def forward(self, x: Tensor) -> Tensor:
        """``(P, C, H, W)`` → ``(P, out_features)``."""
        return self.net(x).flatten(1)


class ResidualMLP(nn.Module):
    """``Linear → act`` layers with a skip connection around every layer whose input and output
    widths agree (h ← h + act(W h + b)); the last layer is linear with no skip. ``sizes = (in,
    hidden…, out)``; inputs with more than one trailing axis are flattened from ``flatten_from``."""

    def __init__(self, sizes: Sequence[int], activation: str = "elu", flatten_from: int | None = None) -> None:
        super().__init__()
        self.flatten = nn.Flatten(flatten_from) if flatten_from is not None else nn.Identity()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = make_activation(activation)
        self.in_features, self.out_features = int(sizes[0]), int(sizes[-1])

    def forward(self, h: Tensor) -> Tensor:
        h = self.flatten(h)
        for layer in self.layers[:-1]:
            out = self.activation(layer(h))
            h = h + out if out.shape == h.shape else out
        return self.layers[-1](h)


class ConvDecoder(nn.Module):
    """``Linear(in → C₀·h·w)``, reshaped to ``C₀×h×w``, ``BN → ELU``, then one stride-2 transposed conv3×3 per channel step,
    BN + ELU after every one but the last, which gives the image's logits. The paper's decoder is
    ``channels=(256, 128, 64)``: 256×4×4 → 128×8×8 → 64×16×16 → C×32×32. The output padding of
    each step is chosen so the sides retrace :func:`downsampled_sizes` of the image exactly.

    Args:
        in_features: width of the input (z, or [z, c]).
        event_shape: ``(C, H, W)`` of the image to produce.
        channels: channels before each transposed conv, widest first.
    """

    def __init__(self, in_features: int, event_shape: Sequence[int], channels: Sequence[int] = (256, 128, 64)) -> None:
        super().__init__()
        c, h, w = (int(s) for s in event_shape)
        hs, ws = downsampled_sizes(h, len(channels))[::-1], downsampled_sizes(w, len(channels))[::-1]
        self.in_features, self.out_features = int(in_features), c * h * w
        self.event_shape = (c, h, w)
        self.start = (int(channels[0]), hs[0], ws[0])
        self.stem = nn.Linear(in_features, math.prod(self.start))
        layers: list[nn.Module] = [nn.BatchNorm2d(self.start[0]), nn.ELU()]
        widths = [*channels, c]
        for i in range(len(channels)):
            padding = (hs[i + 1] - (2 * hs[i] - 1), ws[i + 1] - (2 * ws[i] - 1))  # 0 or 1: exact target side
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 3, stride=2, padding=1, output_padding=padding))
            if i < len(channels) - 1:
                layers += [nn.BatchNorm2d(widths[i + 1]), nn.ELU()]
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        """``(…, in_features)`` → ``(…, C·H·W)`` logits (leading axes flattened for the convs and restored)."""
        lead = h.shape[:-1]
        out = self.net(self.stem(h.reshape(-1, h.shape[-1])).view(-1, *self.start))
        return out.reshape(*lead, self.out_features)


class GroupedDecoder(nn.Module):
    """``num_groups`` independent decoders (e.g. :class:`ConvDecoder`), the interface of
    :class:`~metavae.nn.GroupedMLP`: each row goes through its group's decoder. The groups present
    in a batch are run one after the other (a loop over at most ``num_groups`` decoders; batch
    normalisation then sees only the rows of its own group).

    Args:
        num_groups: number of decoders.
        make: builds one decoder; called ``num_groups`` times.
    """

    def __init__(self, num_groups: int, make: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.decoders = nn.ModuleList(make() for _ in range(num_groups))
        self.num_groups = int(num_groups)
        self.in_features, self.out_features = self.decoders[0].in_features, self.decoders[0].out_features

    def forward(self, h: Tensor, group: Tensor) -> Tensor:
        """``h: (M, in)``, ``group: (M,)`` long in ``[0, num_groups)`` → ``(M, out)``."""
        out = None
        for g in torch.unique(group):
            rows = torch.nonzero(group == g).squeeze(1)
            values = self.decoders[int(g)](h[rows])
            if out is None:  # the decoders' dtype (lower under autocast)
                out = values.new_empty(h.shape[0], self.out_features)
            out[rows] = values.to(out.dtype)
        return h.new_zeros(0, self.out_features) if out is None else out


@contextlib.contextmanager
def batch_norm_statistics_frozen(module: nn.Module) -> Iterator[None]:
    """Within the block every batch-norm layer of ``module`` normalises by its running statistics
    and does not update them (eval behaviour), whatever the module's mode; the modes are restored
    after. For inputs that are not data — e.g. the VampPrior's pseudo-sets, which must neither enter
    the running statistics of real images nor make the prior depend on the batch."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    try:
        for m in norms:
            m.eval()
        yield
    finally:
        for m, mode in zip(norms, modes):
            m.train(mode)
