"""The compiled-inference family as a :class:`~metavae.data.task.Task`: one distribution per inclined plane.

Distribution ``"L=<length>,A=<angle>"`` is the joint distribution of (μ, measurement) for boxes on
that plane under :class:`~metavae.data.physics.InclinedPlane`. An example is one simulated box,
``x = (time, slid, μ, length, angle)`` (event shape ``(5,)``, float32): the measured descent time
in seconds (0 where the box did not slide), 1.0 if it slid else 0.0, its friction coefficient μ,
and the plane it was simulated on. A compiled-inference model
(:class:`~metavae.models.compiled_inference.CompiledInference`) reads the first two as its
observation and is trained to predict the third; a context set is N such boxes from the same
plane (the paper's code: 20 (t, μ) pairs). The plane's ``(length, angle)`` travel with each box
for the oracle that is told them; the meta network and the baseline never read them.

Training distributions: the paper's 25 planes (``TRAIN_PLANES``), ``simulations`` boxes each, a
``validation_fraction`` of them kept for validation. Held-out distributions: the 304 test planes
(``TEST_PLANES``) that are not training planes; any plane can be addressed by name in
:meth:`PhysicsTask.distribution_batch` (the evaluation uses all 304). Every part of every plane
is simulated once, from a seed derived from the task's seed, the plane and the part, and cached.

A box is never in its own context set (its μ would be an input): training contexts come from the
plane's other training boxes of the epoch; validation, test and probe queries take their contexts
from a context pool, a separate simulation of the same plane and part (validation: the pool's
validation rows, so nothing of validation is ever trained on).

With ``fresh=True`` training never reuses a box: every step simulates its queries and its context
pool anew on each training plane from the trainer's generator (the infinite-data regime of
compiled inference; an epoch is still ``simulations·(1 − validation_fraction) / batch_size``
steps). Validation and evaluation data are the stored simulations either way.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metavae.data.context import pool_rows, sample_without_replacement
from metavae.data.physics import TEST_PLANES, TRAIN_PLANES, InclinedPlane, PlaneSimulation
from metavae.data.task import HELD_OUT, Batch, Part, check_batch_sizes, sample_batch
from metavae.errors import ConfigError

if TYPE_CHECKING:
    from metavae.config import TrainConfig

__all__ = ["FIELDS", "PhysicsTask", "examples", "plane_name"]

#: the columns of an example
FIELDS = ("time", "slid", "mu", "length", "angle")

_NAME = re.compile(r"^L=([0-9.]+),A=([0-9.]+)$")


def plane_name(length: float, angle: float) -> str:
    return f"L={length:g},A={angle:g}"


def examples(simulation: PlaneSimulation) -> Tensor:
    """``(P, num, 5)`` float32 examples ``(time or 0, slid, μ, length, angle)`` of a simulation."""
    p, num = simulation.mu.shape
    time = torch.where(simulation.slid, simulation.time, torch.zeros_like(simulation.time))
    plane = torch.stack([simulation.length, simulation.angle], dim=-1)[:, None, :].expand(p, num, 2)
    return torch.cat([torch.stack([time, simulation.slid.double(), simulation.mu], dim=-1), plane], dim=-1).float()


class PhysicsTask:
    """Inclined planes as a family of distributions (see the module docstring); no labels."""

    def __init__(self, train_planes: tuple[tuple[float, float], ...] = TRAIN_PLANES, simulations: int = 1000,
                 context_size: int = 20, validation_fraction: float = 0.1, seed: int = 0,
                 simulator: InclinedPlane = InclinedPlane(), fresh: bool = False) -> None:
        if simulations < 2 or not 0 < validation_fraction < 1 or context_size < 1:
            raise ValueError("PhysicsTask: need simulations ≥ 2, 0 < validation_fraction < 1 and context_size ≥ 1")
        self.simulator, self.seed, self.simulations, self.fresh = simulator, seed, simulations, bool(fresh)
        self.validation_fraction = validation_fraction
        self._context_size = context_size
        self.train_planes = tuple((float(L), float(A)) for L, A in train_planes)
        self._names = [plane_name(L, A) for L, A in self.train_planes]
        self._device = torch.device("cpu")
        self._cache: dict[tuple[str, str], Tensor] = {}
        n_val = max(1, int(round(validation_fraction * simulations)))
        perm = torch.randperm(simulations, generator=torch.Generator().manual_seed(seed + 1))
        self._val_index, self._train_index = perm[:n_val].sort().values, perm[n_val:].sort().values
        self._train = torch.stack([self._part(name, "train") for name in self._names])  # (D, n, 5)
        self._epoch: tuple[int, Tensor] | None = None

    # ------------------------------------------------------------------ data
    def _part(self, name: str, part: str) -> Tensor:
        """``(simulations, 5)`` examples of one plane's part (``train``, ``test``, or their context pools
        ``train_pool``, ``test_pool``), simulated once from a seed derived from the task's seed, the
        plane and the part."""
        key = (name, part)
        if key not in self._cache:
            match = _NAME.match(name)
            if match is None:
                raise ValueError(f"name: {name!r} is not a distribution of this task (a plane is named 'L=<length>,A=<angle>', e.g. 'L=10,A=45')")
            length, angle = float(match.group(1)), float(match.group(2))
            offset = ("train", "test", "train_pool", "test_pool").index(part)
            seed = (self.seed * 1_000_003 + round(length * 1000) * 7919 + round(angle * 1000) * 104_729
                    + offset) % (2**63)
            out = self.simulator.simulate(torch.tensor([length]), torch.tensor([angle]), self.simulations,
                                          torch.Generator().manual_seed(seed))
            self._cache[key] = examples(out)[0].to(self._device)
        return self._cache[key]

    # ------------------------------------------------------------------ the Task protocol
    @property
    def num_decoders(self) -> int:
        return len(self._names)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (len(FIELDS),)

    @property
    def context_size(self) -> int:
        return self._context_size

    def distribution_names(self) -> list[str]:
        return list(self._names)

    def held_out_names(self) -> list[str]:
        trained = set(self._names)
        return [n for n in (plane_name(L, A) for L, A in TEST_PLANES) if n not in trained]

    def check(self, train: TrainConfig) -> None:
        # fresh training batches are simulated at whatever size they need; only validation draws from stored boxes
        n_train = 2**62 if self.fresh else self._train_index.numel()
        check_batch_sizes(train, n_train, self._val_index.numel(), self.context_size)
        rows = pool_rows(train.context_pool_size, train.batch_size, self.context_size)
        if not self.fresh and rows > n_train - train.batch_size:
            raise ConfigError(f"config key 'train.context_pool_size': a step's contexts come from the {n_train} training "
                              f"boxes of a plane other than its {train.batch_size} queries, fewer than the {rows} needed; "
                              "choose a smaller pool or batch size, or more data.simulations")

    def batches_per_epoch(self, batch_size: int) -> int:
        return max(1, self._train_index.numel() // batch_size)

    def _fetch(self, data: Tensor):
        flat = data.reshape(-1, len(FIELDS))

        def fetch(distribution: Tensor, index: Tensor) -> tuple[Tensor, None]:
            return flat[index.to(flat.device)], None
        return fetch

    def _rows(self, index: Tensor) -> Tensor:
        """``(D, k)`` global rows of simulations ``index`` of every training plane in ``self._train``."""
        return torch.arange(self.num_decoders)[:, None] * self.simulations + index[None, :]

    def train_batch(self, epoch: int, step_in_epoch: int, batch_size: int, pool_size: int,
                    generator: torch.Generator) -> Batch:
        if self.fresh:
            return self._fresh_batch(batch_size, pool_size, generator)
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch + 1)
            self._epoch = (epoch, torch.rand(self.num_decoders, self._train_index.numel(), generator=gen).argsort(1))
        order = self._epoch[1]
        start, stop = step_in_epoch * batch_size, (step_in_epoch + 1) * batch_size
        rows = self._rows(self._train_index)  # (D, n_train)
        query = torch.gather(rows, 1, order[:, start:stop])  # (D, B)
        others = torch.gather(rows, 1, torch.cat([order[:, :start], order[:, stop:]], dim=1))  # never a query's own box
        return sample_batch(self._fetch(self._train), torch.arange(self.num_decoders), query, others,
                            self.context_size, pool_size, generator)

    def _fresh_batch(self, batch_size: int, pool_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` new boxes per training plane as queries, their contexts from a new pool."""
        rows = pool_rows(pool_size, batch_size, self.context_size)
        planes = torch.tensor(self.train_planes, dtype=torch.float64)
        data = examples(self.simulator.simulate(planes[:, 0], planes[:, 1], batch_size + rows, generator)).to(self._device)
        n = batch_size + rows
        ids = torch.arange(self.num_decoders)[:, None] * n
        query = ids + torch.arange(batch_size)[None, :]
        candidates = ids + torch.arange(batch_size, n)[None, :]
        return sample_batch(self._fetch(data), torch.arange(self.num_decoders), query, candidates, self.context_size,
                            pool_size, generator)

    def _with_pools(self, part: str) -> Tensor:
        """``(D, 2·simulations, 5)``: each training plane's ``part`` followed by its context pool."""
        return torch.stack([torch.cat([self._part(name, part), self._part(name, f"{part}_pool")]) for name in self._names])

    def validation_batch(self, num_examples: int, pool_size: int) -> Batch:
        """Validation boxes of every training plane, contexts from the validation boxes of its pool."""
        gen = torch.Generator().manual_seed(self.seed + 7919)
        rows = torch.arange(self.num_decoders)[:, None] * (2 * self.simulations) + self._val_index[None, :]
        n = min(num_examples, rows.shape[1])
        query = torch.gather(rows, 1, sample_without_replacement(self.num_decoders, rows.shape[1], n, gen))
        return sample_batch(self._fetch(self._with_pools("train")), torch.arange(self.num_decoders), query,
                            rows + self.simulations, self.context_size, pool_size, gen)

    def test_batch(self, num_examples: int, pool_size: int) -> Batch:
        """Test boxes of every training plane, contexts from its test pool."""
        gen = torch.Generator().manual_seed(self.seed + 7919)
        rows = torch.arange(self.num_decoders)[:, None] * (2 * self.simulations) + torch.arange(self.simulations)[None, :]
        n = min(num_examples, self.simulations)
        query = torch.gather(rows, 1, sample_without_replacement(self.num_decoders, rows.shape[1], n, gen))
        return sample_batch(self._fetch(self._with_pools("test")), torch.arange(self.num_decoders), query,
                            rows + self.simulations, self.context_size, pool_size, gen)

    def distribution_batch(self, name: str, part: Part, num_examples: int | None, pool_size: int,
                           generator: torch.Generator) -> Batch:
        """Up to ``num_examples`` boxes (the first ones; ``None``: all) of any plane's ``part``, contexts
        from that plane and part's context pool (a pool of at most ``pool_size`` boxes): simulated apart
        from the queries, so a box is never in its own context set."""
        if part not in ("train", "test"):
            raise ValueError(f"part: expected 'train' or 'test', got {part!r}")
        data = torch.cat([self._part(name, part), self._part(name, f"{part}_pool")])
        n = self.simulations
        index = torch.arange(n if num_examples is None else min(num_examples, n))
        decoder = torch.tensor([self._names.index(name) if name in self._names else HELD_OUT])
        return sample_batch(self._fetch(data), torch.tensor([0]), index[None], torch.arange(n, 2 * n), self.context_size,
                            min(pool_size, n), generator, decoder_index=decoder)

    def describe(self) -> dict[str, Any]:
        return {"planes": [list(p) for p in self.train_planes], "simulations": self.simulations, "fresh": self.fresh,
                "context_size": self.context_size, "validation_fraction": self.validation_fraction, "seed": self.seed,
                "simulator": asdict(self.simulator)}

    def to(self, device: torch.device) -> PhysicsTask:
        self._device = torch.device(device)
        self._train = self._train.to(device)
        self._cache = {k: v.to(device) for k, v in self._cache.items()}
        return self
