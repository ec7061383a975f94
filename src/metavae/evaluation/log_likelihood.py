"""Importance-weighted log-likelihood per training distribution, the same for every model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metavae.data.task import Batch
from metavae.objectives import log_likelihood
from metavae.training.devices import forked_rng, module_device

__all__ = ["per_distribution_log_likelihood"]


def per_distribution_log_likelihood(
    model: nn.Module, batch: Batch, num_distributions: int, num_importance_samples: int, seed: int
) -> Tensor:
    """Mean IWAE estimate of ``log p(x)`` of the batch's examples, grouped by decoder: ``(num_distributions,)``.

    Uses proper importance weights over all latents (``objective="marginal"``) and a forked,
    seeded RNG, so repeated evaluations use the same importance samples and do not disturb the
    caller's random stream.
    """
    batch = batch.to(module_device(model))
    with torch.no_grad():
        model.eval()
        chunk = max(1, 20_000 // max(1, batch.x.shape[0]))  # importance samples per pass, bounding memory
        with forked_rng(batch.x.device):  # the CPU's and the model device's streams are left as they were
            torch.manual_seed(seed)
            ll = log_likelihood(model, batch.x, batch.context, num_importance_samples, samples_per_chunk=chunk,
                                decoder_index=batch.decoder_index, objective="marginal")  # (B,)
        counts = torch.bincount(batch.decoder_index, minlength=num_distributions)
        if bool((counts == 0).any()):  # a mean over no examples is undefined, not 0 (which would look best)
            raise ValueError(f"the batch has no examples of distribution(s) {torch.nonzero(counts == 0).flatten().tolist()}")
        total = torch.zeros(num_distributions, dtype=ll.dtype, device=ll.device).index_add_(0, batch.decoder_index, ll)
        return (total / counts).cpu()
