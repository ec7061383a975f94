"""Linear probe on held-out distributions (the paper's predictor), and a cross-distribution invariance probe.

Per held-out distribution p (Wu et al., 2020, §5): embed p's train examples — posterior means of
q(z | D, x), each query's context D a uniform random subset of p's train part — fit a
multinomial logistic regression (on standardised codes) to the labels, and report its accuracy
on p's test examples, embedded with contexts from p's test part.

Invariance probe: one classifier is fitted on the codes of a *reference* distribution's train
examples (for transformed images the identity transformation) and tested on each held-out
distribution's test codes. An invariant representation transfers across distributions; one that
is merely informative does not.

Works on any :class:`~metavae.data.task.Task` whose batches carry labels. Context sets are drawn
from a pool of ``pool_size`` examples of the distribution and part (each query's set a uniform
random subset of the pool, hence of the part); everything is seeded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from metavae.data.task import Batch, Task
from metavae.training.devices import module_device

log = logging.getLogger(__name__)

__all__ = ["probe", "embed"]


def embed(model: nn.Module, batch: Batch, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(B, code_dim)`` = ``model.representation`` of the batch's queries with their context
    sets, and the labels ``(B,)``; without gradients, ``chunk`` queries at a time."""
    if batch.labels is None:
        raise ValueError("the probe needs labelled examples: this task's batches carry no labels "
                         "(give a DatasetFamily (x, labels) pairs or a Dataset of (x, label) items)")
    n = batch.x.shape[0]
    batch = batch.to(module_device(model))  # the model's device (CPU for a module without parameters)
    with torch.no_grad():  # the models' representation is computed in eval mode (and restores the mode)
        codes = [model.representation(batch.x[s : s + chunk], batch.context.select(torch.arange(s, min(s + chunk, n))))
                 for s in range(0, n, chunk)]
    return torch.cat(codes).float().cpu().numpy(), batch.labels.cpu().numpy()


def _fit(codes: np.ndarray, labels: np.ndarray, c: float, max_iter: int, seed: int) -> tuple[Pipeline, bool]:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(codes, labels)
    return clf, not any(issubclass(w.category, ConvergenceWarning) for w in caught)



def probe(
    model: nn.Module,
    task: Task,
    *,
    train_examples: int | None = None,
    test_examples: int | None = None,
    pool_size: int = 1000,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
    reference: str | None = None,
    distributions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Linear probe of ``model``'s representation on every held-out distribution of ``task``.

    Args:
        model: anything with ``representation(x, context) → (B, code_dim)``.
        task: a :class:`~metavae.data.task.Task` with labelled train and test parts.
        train_examples: train examples embedded per distribution (``None``: all).
        test_examples: test examples embedded per distribution (``None``: all).
        pool_size: the context pool per distribution and part (at least the context size; capped at the
            part's size): each query's set is a uniform random subset of it.
        C: inverse regularisation strength of the ``LogisticRegression`` (on standardised codes).
        max_iter: iterations of its solver.
        seed: seeds the example subsets, the context sets and the classifier.
        reference: a distribution (e.g. a training one) whose classifier is also tested on every
            probed distribution — the invariance probe; ``None`` skips it.
        distributions: the distributions to probe (default: ``task.held_out_names()``).

    Returns:
        ``{"per_distribution": {name: test accuracy}, "mean_accuracy", "invariance": {"reference",
        "per_distribution", "mean_accuracy"} or None, "converged", "examples": {name: {"train": n, "test": m}}}``.
    """
    names = list(task.held_out_names() if distributions is None else distributions)
    if pool_size < task.context_size:
        raise ValueError(f"pool_size: the context sets of a distribution's examples are drawn from a pool of "
                         f"pool_size examples, which must hold at least the context size {task.context_size}; got {pool_size}")
    if not names:
        raise ValueError("distributions: nothing to probe (the task has no held-out distributions)")
    gen = torch.Generator().manual_seed(seed)

    def codes(name: str, part: str, num: int | None) -> tuple[np.ndarray, np.ndarray]:
        return embed(model, task.distribution_batch(name, part, num, pool_size, gen))  # type: ignore[arg-type]

    ref_clf, converged = None, True
    if reference is not None:
        ref_clf, converged = _fit(*codes(reference, "train", train_examples), C, max_iter, seed)
    per_dist: dict[str, float] = {}
    transfer: dict[str, float] = {}
    sizes: dict[str, dict[str, int]] = {}
    for name in names:
        z_train, y_train = codes(name, "train", train_examples)
        clf, ok = _fit(z_train, y_train, C, max_iter, seed)
        z_test, y_test = codes(name, "test", test_examples)
        sizes[name] = {"train": len(y_train), "test": len(y_test)}
        per_dist[name] = float(clf.score(z_test, y_test))
        converged &= ok
        if ref_clf is not None:
            transfer[name] = float(ref_clf.score(z_test, y_test))
        log.info("%s  probe accuracy %.4f%s", name, per_dist[name],
                 f"  (reference {reference} classifier {transfer[name]:.4f})" if ref_clf is not None else "")
    invariance = None
    if ref_clf is not None:
        invariance = {"reference": reference, "per_distribution": transfer, "mean_accuracy": float(np.mean(list(transfer.values())))}
    return {"per_distribution": per_dist, "mean_accuracy": float(np.mean(list(per_dist.values()))),
            "invariance": invariance, "converged": bool(converged), "examples": sizes}
