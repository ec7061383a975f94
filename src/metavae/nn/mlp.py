"""Multi-layer perceptrons: one shared MLP, and a stack of independent MLPs run in one batch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "make_activation", "MLP", "GroupedMLP", "FiLMMLP"]


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``Linear → act → … → Linear`` over the last axis; ``sizes = (in, hidden…, out)``.

    Inputs with more than one trailing axis (e.g. images ``(B, 1, H, W)``) are flattened
    from ``flatten_from`` on.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", flatten_from: int | None = None) -> None:
        layers: list[nn.Module] = []
        if flatten_from is not None:
            layers.append(nn.Flatten(flatten_from))
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(make_activation(activation))
        super().__init__(*layers)
        self.in_features, self.out_features = int(sizes[0]), int(sizes[-1])


class GroupedMLP(nn.Module):
    """``num_groups`` independent MLPs of equal sizes; each input row goes through its group's MLP.

    Rows are sorted by group and packed into a padded ``(G, n_max, features)`` tensor of the
    G groups present, so every layer is one batched matmul (``baddbmm``) whatever the number
    of groups — no Python loop over groups. With equally many rows per group (the trainer's
    batches) there is no padding.
    """

    def __init__(self, num_groups: int, sizes: Sequence[int], activation: str = "relu") -> None:
        super().__init__()
        self.num_groups = num_groups
        self.in_features, self.out_features = int(sizes[0]), int(sizes[-1])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default initialisation, per group
            self.weights.append(nn.Parameter(torch.empty(num_groups, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_groups, 1, b).uniform_(-bound, bound)))
        self.activation = make_activation(activation)

    def forward(self, h: Tensor, group: Tensor) -> Tensor:
        """``h: (M, in)``, ``group: (M,)`` long in ``[0, num_groups)`` → ``(M, out)``."""
        if h.shape[0] == 0:
            return h.new_zeros(0, self.out_features)
        present, slot = torch.unique(group, return_inverse=True)  # (G,), (M,)
        order = torch.argsort(slot, stable=True)  # rows sorted by group
        counts = torch.bincount(slot, minlength=present.numel())  # (G,)
        starts = torch.cumsum(counts, 0) - counts
        sorted_slot = slot[order]
        rank = torch.arange(h.shape[0], device=h.device) - starts[sorted_slot]  # position within group
        n_max = int(counts.max())
        if int(counts.min()) == n_max:  # equal groups: a reshape, no padding
            packed = h[order].view(present.numel(), n_max, -1)
        else:
            packed = h.new_zeros(present.numel(), n_max, h.shape[-1])  # (G, n_max, in)
            packed[sorted_slot, rank] = h[order]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            packed = torch.baddbmm(b[present], packed, w[present])  # (G, n_max, out_i)
            if i < len(self.weights) - 1:
                packed = self.activation(packed)
        out = packed.new_empty(h.shape[0], self.out_features)  # packed's dtype: lower under autocast
        out[order] = packed[sorted_slot, rank]
        return out


class FiLMMLP(nn.Module):
    """An MLP on ``x`` whose hidden layers are modulated by a condition ``c`` (FiLM; Perez et al. 2018).

    ``h_0 = x``, ``h_{l+1} = act(γ_l(c) ⊙ (W_l h_l + b_l) + β_l(c))`` for the ``len(hidden)`` hidden
    layers, then ``out = W_L h_L + b_L``; all (γ_l, β_l) come from one linear map of ``c``, with
    γ = 1 + (its output) so that a zero map leaves the MLP unconditioned. The condition thus sets
    the slopes and offsets of the units rather than being one more input: a function such as
    ``α(c) − k(c)·x`` is represented exactly by one layer, where a plain MLP on ``[x, c]`` must learn the
    product ``k(c)·x``.

    Args:
        sizes: ``(in, hidden…, out)`` of the MLP on ``x``.
        condition_dim: features of ``c``.
    """

    def __init__(self, sizes: Sequence[int], condition_dim: int, activation: str = "relu") -> None:
        super().__init__()
        self.in_features, self.out_features = int(sizes[0]), int(sizes[-1])
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.hidden = [int(h) for h in sizes[1:-1]]
        self.film = nn.Linear(condition_dim, 2 * sum(self.hidden))
        self.activation = make_activation(activation)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        """``x: (…, in)``, ``condition: (…, condition_dim)`` → ``(…, out)``."""
        gamma_beta = self.film(condition).split([n for h in self.hidden for n in (h, h)], dim=-1)
        h = x
        for i, layer in enumerate(self.layers[:-1]):
            h = self.activation((1 + gamma_beta[2 * i]) * layer(h) + gamma_beta[2 * i + 1])
        return self.layers[-1](h)
