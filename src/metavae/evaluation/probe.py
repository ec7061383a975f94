"""Linear probe on held-out distributions (the paper's predictor), and a cross-value invariance probe.

Per held-out value v (Wu et al., 2020, §5): embed v's train images — posterior means of
q(z | D, x), each query's context D a uniform random subset of v's train images — fit a
multinomial logistic regression (on standardised codes) to the labels, and report its accuracy
on v's test images, embedded with contexts from v's test images.

Invariance probe: one classifier is fitted on the codes of a *reference* value's train images
(default the identity transformation) and tested on each held-out value's test codes. An
invariant representation transfers across values; one that is merely informative does not.

Context sets are drawn from a pool of ``probe.pool_size`` images of the value and part (each
query's set a uniform random subset of the pool, hence of the part); everything is seeded.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from metavae.config import ExperimentConfig
from metavae.data.families import GRIDS, IDENTITY, TransformedImages
from metavae.data.image_task import ImageFamilyTask, make_batch
from metavae.models.base import LatentVariableModel

log = logging.getLogger(__name__)


def embed(
    model: LatentVariableModel,
    images: TransformedImages,
    part: str,
    distribution: int,
    index: Tensor,
    set_size: int,
    pool_size: int,
    generator: torch.Generator,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(n, code_dim)`` and labels ``(n,)`` of images ``index`` of one distribution and part.

    Contexts are drawn from the whole part of that distribution.
    """
    with torch.no_grad():
        candidates = torch.arange(len(images.part(part)))
        batch = make_batch(images, part, torch.tensor([distribution]), index[None], candidates, set_size, pool_size, generator)
        model.eval()
        codes = [
            model.representation(batch.x[s : s + chunk], batch.context.select(torch.arange(s, min(s + chunk, len(index)))))
            for s in range(0, len(index), chunk)
        ]
        assert batch.labels is not None
        return torch.cat(codes).numpy(), batch.labels.numpy()


def _fit(codes: np.ndarray, labels: np.ndarray, c: float, max_iter: int, seed: int) -> tuple[Pipeline, bool]:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(codes, labels)
    return clf, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def run_probe(config: ExperimentConfig, model: LatentVariableModel, task: ImageFamilyTask) -> dict[str, Any]:
    """Probe every held-out value of the run's family/split; returns the ``probe.json`` content."""
    pc = config.probe
    start = time.perf_counter()
    images = task.images
    grid = GRIDS[config.data.family]
    reference = IDENTITY[config.data.family] if pc.reference is None else pc.reference  # validated with the config
    gen = torch.Generator().manual_seed(pc.seed)
    n_train, n_test = len(images.train), len(images.test)
    train_index = torch.randperm(n_train, generator=gen)[: pc.train_examples or n_train].sort().values
    test_index = torch.arange(min(pc.test_examples or n_test, n_test))
    n = config.data.context_size

    def codes(dist: int, part: str) -> tuple[np.ndarray, np.ndarray]:
        index = train_index if part == "train" else test_index
        return embed(model, images, part, dist, index, n, pc.pool_size, gen)

    ref_clf, ref_converged = _fit(*codes(grid.index(reference), "train"), pc.C, pc.max_iter, pc.seed)
    per_value: dict[str, float] = {}
    transfer: dict[str, float] = {}
    converged = ref_converged
    for dist in task.held_out_distributions.tolist():
        clf, ok = _fit(*codes(dist, "train"), pc.C, pc.max_iter, pc.seed)
        z_test, y_test = codes(dist, "test")
        key = f"{grid[dist]:g}"
        per_value[key] = float(clf.score(z_test, y_test))
        transfer[key] = float(ref_clf.score(z_test, y_test))
        converged &= ok
        log.info("%s=%s  probe accuracy %.4f  (reference-%g classifier %.4f)", config.data.family, key,
                 per_value[key], reference, transfer[key])
    return {
        "model": config.model_name,
        "family": config.data.family,
        "split": config.data.split,
        "per_value": per_value,
        "mean_accuracy": float(np.mean(list(per_value.values()))),
        "invariance": {"reference": reference, "per_value": transfer, "mean_accuracy": float(np.mean(list(transfer.values())))},
        "settings": {
            "train_examples_per_value": int(train_index.numel()),
            "test_examples_per_value": int(test_index.numel()),
            "context_size": n,
            "context_pool_size": pc.pool_size,
            "representation": "posterior mean",
            "classifier": f"StandardScaler + LogisticRegression(C={pc.C}, max_iter={pc.max_iter})",
            "converged": bool(converged),
            "seed": pc.seed,
        },
        "seconds": time.perf_counter() - start,
    }
