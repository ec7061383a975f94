"""The ``Task`` contract, run over every task of the library: later tasks (physics, exponential
families, smallNORB) add a factory to ``TASKS`` and get these checks for free.

Each factory builds a task on *marker* data and returns a decoder that reads, off the pixels alone,
which distribution, part and example a data point is (plain numpy arithmetic, no library code), so
the checks ask what really reached a batch, not the library's own bookkeeping:

- transformed images: the marker MNIST of ``pipeline_helpers`` (centre patch = part and image,
  blob angle = rotation);
- ``DatasetFamily``: K data sets of unequal sizes whose first three pixels encode distribution,
  part and example index;
- smallNORB (``data.dataset: norb``): synthetic files in the official format whose marker pixels
  give part, pair and camera; the distribution is the pair's elevation as written in its info file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from conftest import TINY
from metavae.config import TrainConfig, load_config
from metavae.data import HELD_OUT, DatasetFamily, InclinedPlane, Task
from metavae.data.physics_task import PhysicsTask
from metavae.errors import ConfigError
from metavae.experiments.transformed_images import build_task
from norb_helpers import decode as decode_norb
from norb_helpers import factor_value, make_norb_root
from pipeline_helpers import ROTATE_SPARSE_HELD_OUT, decode, make_marker_root


@dataclass(frozen=True)
class Identity:
    """What the pixels say about ``n`` data points."""

    name: np.ndarray  # (n,) distribution names
    is_test: np.ndarray  # (n,) bool
    index: np.ndarray  # (n,) example index within its distribution's part

    def keys(self) -> set[tuple[str, bool, int]]:
        return set(zip(self.name.ravel().tolist(), self.is_test.ravel().tolist(), self.index.ravel().tolist()))


@dataclass
class Case:
    task: Task
    identify: Callable[[torch.Tensor], Identity]
    batch_size: int
    pool_size: int
    labelled: bool = True


def _image_case(tmp_path) -> Case:
    root = make_marker_root(tmp_path / "data")
    task = build_task(load_config(None, TINY), root)

    def identify(x):
        m = decode(x)
        # the base images are the same for every rotation: the example identity is the base image
        return Identity(np.array([f"rotate={a:g}" for a in m.angle]), m.is_test, m.index)

    return Case(task, identify, batch_size=20, pool_size=30)


#: DatasetFamily marker data: distribution k has TRAIN_SIZES[k] train and TEST_SIZES[k] test examples
TRAIN_SIZES, TEST_SIZES = (60, 80, 70, 90, 100), (30, 25, 40, 35, 20)
FAMILY_NAMES = ("a", "b", "c", "d", "e")
FAMILY_HELD_OUT = (1, 3)


def marker_family(k: int, n: int, part: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, 6, 6)`` in [0, 1]: pixel 0 = (k + 1)/10, pixel 1 = part/2, pixel 2 = index/1000; labels index % 3."""
    x = torch.full((n, 1, 6, 6), 0.5)
    flat = x.view(n, -1)
    flat[:, 0] = (k + 1) / 10
    flat[:, 1] = part / 2
    flat[:, 2] = torch.arange(n) / 1000
    return x, torch.arange(n) % 3


def _family_case(tmp_path) -> Case:
    train = [marker_family(k, n, 0) for k, n in enumerate(TRAIN_SIZES)]
    test = [marker_family(k, n, 1) for k, n in enumerate(TEST_SIZES)]
    task = DatasetFamily(train, test, held_out=FAMILY_HELD_OUT, names=FAMILY_NAMES, context_size=5,
                         validation_fraction=0.25, seed=3)

    def identify(x):
        flat = x.detach().reshape(x.shape[0], -1).double().numpy()
        k = np.rint(flat[:, 0] * 10).astype(int) - 1
        return Identity(np.array(FAMILY_NAMES)[k], np.rint(flat[:, 1] * 2) == 1, np.rint(flat[:, 2] * 1000).astype(int))

    return Case(task, identify, batch_size=10, pool_size=12)


#: PhysicsTask marker data: noise-free times (σ = 1e-9 s) on planes where every box slides (A ≥ 50°), so a box's
#: plane is the one whose closed-form time for its μ matches its time, and its μ names it within the part
PHYSICS_TRAIN = ((2.0, 50.0), (4.0, 50.0), (2.0, 60.0), (4.0, 60.0))


def _physics_case(tmp_path) -> Case:
    simulator = InclinedPlane(noise=1e-9)
    task = PhysicsTask(PHYSICS_TRAIN, simulations=200, context_size=5, validation_fraction=0.1, seed=2, simulator=simulator)
    names = [*task.distribution_names(), task.held_out_names()[-1]]
    planes = torch.tensor([[float(v) for v in re.findall(r"[0-9.]+", n)] for n in names], dtype=torch.float64)  # (P, 2)
    where = {}  # μ → (part, index): a decoding table read off the stored simulations and their context pools
    for name in names:
        for part in ("train", "test"):
            for offset, stored in ((0, part), (task.simulations, f"{part}_pool")):
                for i, mu in enumerate(task._part(name, stored)[:, 2].tolist()):
                    where[(name, mu)] = (part == "test", offset + i)

    def identify(x):
        x = x.detach().double()
        rad = torch.deg2rad(planes[:, 1])[None, :]
        a = 9.8 * (torch.sin(rad) - torch.cos(rad) * x[:, 2:3])  # (n, P)
        expected = torch.sqrt(2 * planes[:, 0][None, :] / a)
        plane = (expected - x[:, :1]).abs().argmin(1).numpy()
        name = np.array(names)[plane]
        found = [where[(nm, mu)] for nm, mu in zip(name.tolist(), x[:, 2].float().tolist())]
        return Identity(name, np.array([f[0] for f in found]), np.array([f[1] for f in found]))

    return Case(task, identify, batch_size=10, pool_size=12, labelled=False)


#: exponential-family data (unbounded values, DatasetFamily(value_range=None)): (family, θ) per distribution
EXPFAM = (("gaussian", -3.0), ("exponential", 1.5), ("lognormal", 0.5), ("gaussian", 4.0))


def _expfam_case(tmp_path) -> Case:
    from metavae.data import expfam

    def draw(k: int, part: int) -> torch.Tensor:  # (n, 20, 2); the same call regenerates them for identify
        family, theta = EXPFAM[k]
        return expfam.sample(family, [theta], (60, 30)[part], 20, seed=100 * k + part)[0]

    names = [f"{f}:{t:g}" for f, t in EXPFAM]
    task = DatasetFamily([draw(k, 0) for k in range(4)], [draw(k, 1) for k in range(4)], held_out=[2], names=names,
                         context_size=4, validation_fraction=0.2, seed=1, value_range=None)
    table = {draw(k, part)[i].numpy().tobytes(): (names[k], part == 1, i)
             for k in range(4) for part in (0, 1) for i in range((60, 30)[part])}

    def identify(x):
        found = [table[row.numpy().tobytes()] for row in x.detach().reshape(-1, 20, 2)]
        return Identity(np.array([f[0] for f in found]), np.array([f[1] for f in found]), np.array([f[2] for f in found]))

    return Case(task, identify, batch_size=8, pool_size=12, labelled=False)


def _norb_case(tmp_path) -> Case:
    root, pairs = make_norb_root(tmp_path / "data", n_train=180, n_test=180)  # 40 examples per elevation and part
    overrides = [("data.dataset", "norb"), ("data.family", "elevation"), ("data.split", "sparse"),
                 ("data.context_size", 5), ("data.validation_size", 12)]
    task = build_task(load_config(None, overrides), root)

    def identify(x):
        m = decode_norb(x)
        value = np.where(m.is_test, factor_value(pairs["test"], "elevation", m.pair),
                         factor_value(pairs["train"], "elevation", m.pair))
        return Identity(np.array([f"elevation={v}" for v in value]), m.is_test, m.row)

    return Case(task, identify, batch_size=8, pool_size=12)


TASKS = {"transformed_images": _image_case, "dataset_family": _family_case, "physics": _physics_case,
         "expfam_dataset_family": _expfam_case, "norb": _norb_case}


@pytest.fixture(params=list(TASKS))
def case(request, tmp_path) -> Case:
    return TASKS[request.param](tmp_path)


def _train_config(case: Case, **kw) -> TrainConfig:
    base = dict(batch_size=case.batch_size, context_pool_size=case.pool_size, val_examples=8, val_pool_size=12)
    return TrainConfig(**{**base, **kw})


def _members(batch, case):
    """Identity of the queries ``(B,)`` and of each query's context set ``(B, N)``."""
    q = case.identify(batch.x)
    e = case.identify(batch.context.elements)
    idx = batch.context.index.numpy()
    return q, Identity(e.name[idx], e.is_test[idx], e.index[idx])


def test_the_task_satisfies_the_protocol(case):
    task = case.task
    assert isinstance(task, Task)
    assert task.num_decoders == len(task.distribution_names()) >= 1
    assert not set(task.distribution_names()) & set(task.held_out_names())
    assert isinstance(task.event_shape, tuple) and all(isinstance(d, int) for d in task.event_shape)
    task.check(_train_config(case))
    import yaml

    description = task.describe()  # recorded by runs started from Python: plain data, the same every time
    assert yaml.safe_load(yaml.safe_dump(description)) == description == task.describe()


def test_a_training_batch_pairs_each_query_with_a_context_and_decoder_of_its_own_distribution(case):
    task, b, n = case.task, case.batch_size, case.task.context_size
    batch = task.train_batch(0, 1, b, case.pool_size, torch.Generator().manual_seed(0))
    d = task.num_decoders
    assert batch.x.shape == (d * b, *task.event_shape)
    assert batch.context.index.shape == (d * b, n)
    assert batch.context.elements.shape == (d * case.pool_size, *task.event_shape)
    q, ctx = _members(batch, case)
    names = np.array(task.distribution_names())
    assert (q.name == names[batch.decoder_index.numpy()]).all(), "a query's decoder is not its distribution's"
    assert (ctx.name == q.name[:, None]).all(), "a context element from another distribution"
    assert not q.is_test.any() and not ctx.is_test.any(), "training data from a test part"
    assert np.bincount(batch.decoder_index.numpy(), minlength=d).tolist() == [b] * d  # every distribution, equally
    for row in ctx.index:
        assert len(set(row.tolist())) == n  # a set has N distinct elements


def test_training_queries_of_one_epoch_never_repeat_and_never_touch_validation(case):
    task, b = case.task, case.batch_size
    steps = task.batches_per_epoch(b)
    gen = torch.Generator().manual_seed(1)
    seen: list[tuple] = []
    train_side: set = set()
    for step in range(steps):
        batch = task.train_batch(0, step, b, case.pool_size, gen)
        q, ctx = _members(batch, case)
        seen += list(zip(q.name.tolist(), q.index.tolist()))
        train_side |= q.keys() | ctx.keys()
    assert len(seen) == len(set(seen)) == steps * b * task.num_decoders
    val = task.validation_batch(8, 12)
    vq, vctx = _members(val, case)
    assert not (vq.keys() | vctx.keys()) & train_side, "validation examples were also used in training"
    assert (vctx.name == vq.name[:, None]).all()
    names = np.array(task.distribution_names())
    assert (vq.name == names[val.decoder_index.numpy()]).all()


def test_validation_and_test_batches_are_fixed_and_from_their_parts(case):
    task = case.task
    a, b = task.validation_batch(8, 12), task.validation_batch(8, 12)
    assert torch.equal(a.x, b.x) and torch.equal(a.context.index, b.context.index)
    t1, t2 = task.test_batch(6, 12), task.test_batch(6, 12)
    assert torch.equal(t1.x, t2.x) and torch.equal(t1.context.elements, t2.context.elements)
    q, ctx = _members(t1, case)
    assert q.is_test.all() and ctx.is_test.all(), "a test batch reached into a train part"
    assert (ctx.name == q.name[:, None]).all()
    assert np.bincount(t1.decoder_index.numpy(), minlength=task.num_decoders).tolist() == [6] * task.num_decoders


@pytest.mark.parametrize("part", ["train", "test"])
def test_a_held_out_distribution_batch_stays_in_that_distribution_and_part(case, part):
    task = case.task
    name = task.held_out_names()[-1]
    batch = task.distribution_batch(name, part, 7, 12, torch.Generator().manual_seed(2))
    q, ctx = _members(batch, case)
    assert (q.name == name).all() and (ctx.name == name).all()
    assert (q.is_test == (part == "test")).all() and (ctx.is_test == (part == "test")).all()
    assert len(set(q.index.tolist())) == 7  # distinct examples
    assert (batch.decoder_index == HELD_OUT).all()  # a held-out distribution has no decoder
    if case.labelled:
        assert batch.labels is not None and batch.labels.shape == (7,)


def test_a_training_distribution_batch_names_its_decoder(case):
    task = case.task
    name = task.distribution_names()[1]
    batch = task.distribution_batch(name, "train", None, 12, torch.Generator().manual_seed(2))
    assert (batch.decoder_index == 1).all()
    assert (case.identify(batch.x).name == name).all()


def test_an_unknown_distribution_name_is_a_value_error(case):
    with pytest.raises(ValueError, match="name: 'nope' is not a distribution"):
        case.task.distribution_batch("nope", "train", 5, 12, torch.Generator())


def test_batches_are_reproducible_from_the_generator(case):
    task = case.task
    a = task.train_batch(0, 0, case.batch_size, case.pool_size, torch.Generator().manual_seed(5))
    b = task.train_batch(0, 0, case.batch_size, case.pool_size, torch.Generator().manual_seed(5))
    c = task.train_batch(0, 0, case.batch_size, case.pool_size, torch.Generator().manual_seed(6))
    assert torch.equal(a.x, b.x) and torch.equal(a.context.index, b.context.index)
    assert not torch.equal(a.context.index, c.context.index)


def test_check_refuses_sizes_the_data_cannot_serve(case):
    with pytest.raises(ConfigError, match="train.batch_size"):
        case.task.check(_train_config(case, batch_size=10_000, context_pool_size=0))
    with pytest.raises(ConfigError, match="train.context_pool_size"):
        case.task.check(_train_config(case, context_pool_size=10_000))


def test_image_task_names_are_the_papers_rotate_sparse_split(tmp_path):
    task = _image_case(tmp_path).task
    assert task.distribution_names() == ["rotate=-160", "rotate=-80", "rotate=0", "rotate=80", "rotate=160"]
    assert task.held_out_names() == [f"rotate={v:g}" for v in ROTATE_SPARSE_HELD_OUT]


def test_image_probe_subsets_are_the_same_base_images_for_every_value(tmp_path):
    """Paired comparisons across rotations: with the same seed, every value's probe batch holds the
    same base images (read off the markers), whatever earlier calls drew from the generator."""
    case = _image_case(tmp_path)
    gen = torch.Generator().manual_seed(4)
    first = case.identify(case.task.distribution_batch("rotate=-180", "train", 20, 30, gen).x)
    second = case.identify(case.task.distribution_batch("rotate=100", "train", 20, 30, gen).x)
    assert first.index.tolist() == second.index.tolist() and len(set(first.index.tolist())) == 20
    assert (first.name == "rotate=-180").all() and (second.name == "rotate=100").all()
