"""Running a manifest of :class:`~metavae.experiments.reproduce.RunSpec` s on this machine.

:data:`JOBS` says, per kind of run, how it is run and when it counts as finished. The finished
test reuses what the experiment functions already write, nothing new:

- ``model``: ``<run>/summary.json`` with this config (:func:`~metavae.experiments.transformed_images.run_variant`);
- ``compare``: ``compare.json`` equal to what the variants' summaries give now (so a retrained variant redoes it);
- ``physics`` / ``expfam``: the experiment's ``summary.json`` with this config (their ``report`` writes it last);
- ``invariance``: ``invariance.json`` with these settings and run directories, newer than their summaries.

A run that did not finish (killed, or failed) is simply run again: the experiment functions
resume its run directories from their last checkpoints (the run-directory guarantees) and reuse
the variants that did finish.

:func:`run_manifest` runs the manifest in dependency order: a run starts once every run it
depends on finished; a finished run is skipped; a failing run is reported and retried once
(``retries``) while the others go on; the runs depending on a run that failed twice are reported
as blocked, not started. ``jobs`` > 1 runs that many runs at once in separate processes (spawned,
so each has its own torch state), the CPU's threads divided among them.

``engine="ray"`` runs each run as a Ray task instead (``address``: an existing cluster, default a
local instance), through the same scheduler: at most ``jobs`` tasks in flight, each requesting
``cpus_per_run`` CPUs (its torch threads) and one GPU when the cluster has GPUs (the run's
``train.device: auto`` then picks it). Ray's own task retries are off: the retry-once policy is
this module's. ``out`` and the data root must be paths every node sees (a shared file system).
Ray is an optional extra (``pip install metavae[ray]``), imported only here and only for this engine.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metavae.config import to_dict
from metavae.errors import ConfigError, MetaVAEError, RunDirectoryError
from metavae.evaluation import invariance
from metavae.experiments import expfam, physics
from metavae.experiments import transformed_images as images
from metavae.experiments.common import finished_record, output_directory, read_json
from metavae.experiments.reproduce import RunSpec

log = logging.getLogger(__name__)

__all__ = ["Job", "JOBS", "Outcome", "run_manifest", "is_finished", "format_outcomes"]

Status = Literal["finished", "skipped", "failed", "blocked"]


@dataclass(frozen=True)
class Job:
    """How a kind of run is run and when it is finished: ``run(spec, deps, out, data_root, progress)``
    (``deps``: the specs it depends on; ``out``: the manifest's root folder) and ``finished(spec, deps, out)``."""

    run: Callable[[RunSpec, Sequence[RunSpec], Path, Path, bool], Any]
    finished: Callable[[RunSpec, Sequence[RunSpec], Path], bool]


def _run_model(spec: RunSpec, deps: Sequence[RunSpec], out: Path, data_root: Path, progress: bool) -> None:
    images.run_variant(spec.config, out / spec.out, data_root, progress=progress)


def _model_finished(spec: RunSpec, deps: Sequence[RunSpec], out: Path) -> bool:
    return finished_record(out / spec.out / "summary.json", spec.config.to_dict()) is not None


def _compare_result(spec: RunSpec, deps: Sequence[RunSpec], out: Path) -> dict[str, Any]:
    rows = {}
    for dep in deps:
        record = finished_record(out / dep.out / "summary.json", dep.config.to_dict())
        if record is None:
            raise RunDirectoryError(f"{out / dep.out} holds no finished run of {dep.name}; run it first")
        rows[Path(dep.out).name] = record
    return images.compare_result(spec.config, rows)


def _run_compare(spec: RunSpec, deps: Sequence[RunSpec], out: Path, data_root: Path, progress: bool) -> None:
    images.write_compare(_compare_result(spec, deps, out), output_directory(out / spec.out))


def _compare_finished(spec: RunSpec, deps: Sequence[RunSpec], out: Path) -> bool:
    written = read_json(out / spec.out / "compare.json")
    try:
        return written is not None and written == _compare_result(spec, deps, out)
    except RunDirectoryError:  # a variant is not finished
        return False


def _experiment_job(module: Any) -> Job:
    """``physics`` / ``expfam``: the experiment's resumable ``report``; finished when its summary.json has this config."""

    def run(spec: RunSpec, deps: Sequence[RunSpec], out: Path, data_root: Path, progress: bool) -> None:
        module.report(spec.config, out / spec.out, progress=progress)

    def finished(spec: RunSpec, deps: Sequence[RunSpec], out: Path) -> bool:
        return finished_record(out / spec.out / "summary.json", spec.config.to_dict()) is not None

    return Job(run, finished)


def _run_invariance(spec: RunSpec, deps: Sequence[RunSpec], out: Path, data_root: Path, progress: bool) -> None:
    result = invariance.invariance_of_runs([out / d.out for d in deps], data_root, spec.config)
    invariance.write_invariance(result, out / spec.out)


def _invariance_finished(spec: RunSpec, deps: Sequence[RunSpec], out: Path) -> bool:
    path = out / spec.out / "invariance.json"
    try:
        result = json.loads(path.read_text())
        settings, runs = result["settings"], [r["run_dir"] for r in result["runs"]]
        newest = max((out / d.out / "summary.json").stat().st_mtime for d in deps) if deps else 0.0
        stamp = path.stat().st_mtime
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return False
    wanted = to_dict(spec.config)
    return ({k: settings.get(k) for k in wanted} == json.loads(json.dumps(wanted))
            and runs == [str(out / d.out) for d in deps] and stamp >= newest)


#: run kind → how it is run and when it is finished
JOBS: dict[str, Job] = {
    "model": Job(_run_model, _model_finished),
    "compare": Job(_run_compare, _compare_finished),
    "physics": _experiment_job(physics),
    "expfam": _experiment_job(expfam),
    "invariance": Job(_run_invariance, _invariance_finished),
}


@dataclass
class Outcome:
    """What became of one run: ``finished`` (run now), ``skipped`` (finished earlier), ``failed``
    (after its retries; ``error`` the last one-line reason) or ``blocked`` (a run it depends on failed)."""

    name: str
    status: Status
    attempts: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def is_finished(spec: RunSpec, deps: Sequence[RunSpec], out: Path) -> bool:
    return JOBS[spec.kind].finished(spec, deps, out)


def _execute(spec: RunSpec, deps: Sequence[RunSpec], out: Path, data_root: Path, progress: bool,
             threads: int | None = None) -> float:
    """Run one spec (in this process or a worker; ``threads``: torch's threads there); returns its wall time."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    JOBS[spec.kind].run(spec, deps, out, data_root, progress)
    return time.perf_counter() - start


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


class _Inline(cf.Executor):
    """An executor that runs each call at once in this process (``jobs=1``): the same scheduling code."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:  # type: ignore[override]
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - reported as the run's failure
            future.set_exception(exc)
        return future


class _Ray(cf.Executor):
    """Each call a Ray task (``ray.remote``), its result a :class:`concurrent.futures.Future`."""

    def __init__(self, address: str | None, cpus_per_run: int) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--engine ray needs Ray: pip install 'metavae[ray]' (or use the local engine)") from None
        if not ray.is_initialized():
            try:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds (ConnectionError, RuntimeError, ValueError)
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise ConfigError(f"--engine ray: cannot start or join {where} ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]}); check --address, or use the local engine") from None
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self.cpus = cpus_per_run
        task = ray.remote(_execute)
        self._train = task.options(num_cpus=cpus_per_run, num_gpus=gpus, max_retries=0)  # a GPU for the runs that train
        self._other = task.options(num_cpus=1, num_gpus=0, max_retries=0)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:  # type: ignore[override]
        assert fn is _execute, "the Ray engine runs manifest entries only"
        trains = args[0].kind in ("model", "physics", "expfam")
        return (self._train if trains else self._other).remote(*args, threads=self.cpus if trains else 1).future()


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's limit), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _reason(exc: BaseException) -> str:
    exc = getattr(exc, "cause", None) or exc  # a Ray task error wraps the run's own exception
    text = " ".join(str(exc).split())[:300]
    return text if isinstance(exc, MetaVAEError) else f"{type(exc).__name__}: {text}"


def run_manifest(specs: Sequence[RunSpec], out: str | os.PathLike[str], data_root: str | os.PathLike[str], jobs: int = 1,
                 retries: int = 1, progress: bool = True, engine: Literal["local", "ray"] = "local",
                 address: str | None = None, cpus_per_run: int = 1) -> list[Outcome]:
    """Run ``specs`` into ``out`` (each in ``out/<spec.out>``); returns one :class:`Outcome` per spec, in manifest order.

    ``engine``: ``local`` (this process for ``jobs=1``, else ``jobs`` spawned processes) or ``ray``
    (``jobs`` Ray tasks in flight on the instance at ``address``, ``cpus_per_run`` CPUs each).

    Every dependency must be in ``specs`` (:func:`~metavae.experiments.reproduce.select` adds them)."""
    out, data_root = Path(out).resolve(), Path(data_root).resolve()  # tasks on other nodes or working directories
    by_name = {s.name: s for s in specs}
    for s in specs:
        missing = [d for d in s.depends if d not in by_name]
        if missing:
            raise ConfigError(f"run {s.name} depends on {', '.join(missing)}, which is not in the manifest")
    if jobs < 1:
        raise ConfigError(f"jobs must be ≥ 1, got {jobs}")
    if engine not in ("local", "ray"):
        raise ConfigError(f"unknown engine {engine!r}; choose local or ray")
    output_directory(out)
    outcomes: dict[str, Outcome] = {}
    pending = list(specs)
    running: dict[cf.Future, tuple[RunSpec, cf.Executor]] = {}
    attempts: dict[str, int] = {}
    errors: dict[str, list[str]] = {}
    threads = max(1, _usable_cpus() // jobs)

    def new_pool() -> cf.Executor:
        if engine == "ray":
            return _Ray(address, cpus_per_run)
        if jobs == 1:
            return _Inline()
        return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init, initargs=(threads,))

    pool = new_pool()

    def submit(spec: RunSpec) -> None:
        attempts[spec.name] = attempts.get(spec.name, 0) + 1
        log.info("%s: starting (attempt %d)", spec.name, attempts[spec.name])
        deps = [by_name[d] for d in spec.depends]
        running[pool.submit(_execute, spec, deps, out, data_root, progress and jobs == 1 and engine == "local")] = (spec, pool)

    try:
        while pending or running:
            before = (len(pending), len(running))
            for spec in list(pending):
                states = [outcomes[d].status if d in outcomes else None for d in spec.depends]
                if any(s in ("failed", "blocked") for s in states):
                    pending.remove(spec)
                    bad = [d for d, s in zip(spec.depends, states) if s in ("failed", "blocked")]
                    outcomes[spec.name] = Outcome(spec.name, "blocked", errors=[f"needs {', '.join(bad)}"])
                    log.warning("%s: not started, it needs %s", spec.name, ", ".join(bad))
                elif all(s in ("finished", "skipped") for s in states) and len(running) < jobs:
                    pending.remove(spec)
                    if is_finished(spec, [by_name[d] for d in spec.depends], out):
                        outcomes[spec.name] = Outcome(spec.name, "skipped")
                        log.info("%s: finished earlier, skipped", spec.name)
                    else:
                        submit(spec)
            if not running:
                if (len(pending), len(running)) == before:
                    raise ConfigError(f"the runs {', '.join(s.name for s in pending)} depend on each other in a cycle")
                continue
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in done:
                spec, owner = running.pop(future)
                try:
                    seconds = future.result()
                except cf.process.BrokenProcessPool as exc:  # a worker died (e.g. killed): every run in flight failed
                    errors.setdefault(spec.name, []).append(_reason(exc))
                    if owner is pool:  # the first of them replaces the pool
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = new_pool()
                except Exception as exc:  # noqa: BLE001 - a run's failure, whatever it is, must not stop the others
                    errors.setdefault(spec.name, []).append(_reason(exc))
                else:
                    outcomes[spec.name] = Outcome(spec.name, "finished", attempts[spec.name], seconds, errors.get(spec.name, []))
                    log.info("%s: finished in %.0f s", spec.name, seconds)
                    continue
                if attempts[spec.name] <= retries:
                    log.warning("%s failed (%s); retrying", spec.name, errors[spec.name][-1])
                    submit(spec)
                else:
                    log.warning("%s failed again (%s); the other runs go on", spec.name, errors[spec.name][-1])
                    outcomes[spec.name] = Outcome(spec.name, "failed", attempts[spec.name], errors=errors[spec.name])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [outcomes[s.name] for s in specs]


def format_outcomes(outcomes: Sequence[Outcome]) -> str:
    """One line per run that did not simply finish earlier, then the counts."""
    lines = []
    for o in outcomes:
        if o.status == "finished":
            lines.append(f"finished  {o.name} ({o.seconds:.0f} s{', attempt ' + str(o.attempts) if o.attempts > 1 else ''})")
        elif o.status in ("failed", "blocked"):
            lines.append(f"{o.status:<8}  {o.name}: {o.errors[-1] if o.errors else ''}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "skipped", "failed", "blocked")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
