"""The local executor of `metavae reproduce`: dependency order, skipping finished runs, resuming killed
ones, retry-once on failure while the others go on, --jobs processes. Tiny runs on synthetic MNIST."""

from __future__ import annotations

import json
import os

import pytest

from conftest import TINY
from metavae.config import load_config
from metavae.errors import ConfigError, DataError
from metavae.experiments import executor as ex
from metavae.experiments import transformed_images as images
from metavae.experiments.reproduce import RunSpec

VARIANTS = ("metavae", "vae_per_distribution")


def tiny_panel(family: str = "rotate", variants=VARIANTS) -> list[RunSpec]:
    base = load_config(None, [("name", "tiny"), ("data.family", family), ("data.split", "sparse"), *TINY])
    panel = f"mnist/{family}_sparse"
    specs = [RunSpec(f"{panel}/{v}", "model", images.variant_config(base, v), 0, f"{panel}/{v}") for v in variants]
    return [*specs, RunSpec(f"{panel}/compare", "compare", base, 0, panel, tuple(s.name for s in specs))]


class Spy:
    """Wraps a job kind's run: records the names it ran; ``fail``: name → how many calls fail first."""

    def __init__(self, job: ex.Job, fail: dict[str, int] | None = None) -> None:
        self.job, self.fail, self.calls = job, dict(fail or {}), []

    def run(self, spec, deps, out, data_root, progress):
        self.calls.append(spec.name)
        if self.fail.get(spec.name, 0) > 0:
            self.fail[spec.name] -= 1
            raise DataError(f"{spec.name}: simulated failure")
        return self.job.run(spec, deps, out, data_root, progress)


def spy_on(monkeypatch, kind: str, fail: dict[str, int] | None = None) -> Spy:
    spy = Spy(ex.JOBS[kind], fail)
    monkeypatch.setitem(ex.JOBS, kind, ex.Job(spy.run, ex.JOBS[kind].finished))
    return spy


def test_runs_in_dependency_order_then_skips_finished_runs(mnist_root, tmp_path, monkeypatch):
    specs = tiny_panel()
    out = tmp_path / "out"
    models, compares = spy_on(monkeypatch, "model"), spy_on(monkeypatch, "compare")
    outcomes = ex.run_manifest(specs, out, mnist_root, progress=False)
    assert [(o.name, o.status, o.attempts) for o in outcomes] == [(s.name, "finished", 1) for s in specs]
    assert models.calls == [s.name for s in specs[:2]] and compares.calls == [specs[2].name]
    result = json.loads((out / "mnist/rotate_sparse/compare.json").read_text())
    for v in VARIANTS:  # every number of compare.json is the variant's own summary
        summary = json.loads((out / f"mnist/rotate_sparse/{v}/summary.json").read_text())
        assert result["variants"][v] == {k: val for k, val in summary.items() if k != "config"}
    # again: nothing is run
    again = ex.run_manifest(specs, out, mnist_root, progress=False)
    assert [o.status for o in again] == ["skipped"] * 3
    assert len(models.calls) == 2 and len(compares.calls) == 1
    # a variant's summary from other settings: that run is finished afresh, and the compare step redone
    path = out / "mnist/rotate_sparse/vae_per_distribution/summary.json"
    record = json.loads(path.read_text())
    record["config"]["probe"]["seed"] += 1
    path.write_text(json.dumps(record))
    third = ex.run_manifest(specs, out, mnist_root, progress=False)
    assert [o.status for o in third] == ["skipped", "finished", "finished"]


def test_a_killed_run_is_resumed_not_restarted(mnist_root, tmp_path):
    specs = tiny_panel(variants=("metavae",))
    out = tmp_path / "out"
    run_dir = out / specs[0].out
    config = specs[0].config
    short = load_config(None, [*_flat(config), ("train.max_steps", 4)])  # the same run, stopped early as by a kill
    images.train(short, run_dir, mnist_root, progress=False)
    created = json.loads((run_dir / "run.json").read_text())["created"]
    first_metrics = (run_dir / "metrics.jsonl").read_text()
    assert not ex.is_finished(specs[0], [], out)
    outcomes = ex.run_manifest(specs, out, mnist_root, progress=False)
    assert [o.status for o in outcomes] == ["finished", "finished"]
    assert json.loads((run_dir / "run.json").read_text())["created"] == created  # the same run directory, continued
    assert first_metrics and (run_dir / "metrics.jsonl").read_text().startswith(first_metrics)  # its records kept
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == config.train.max_steps
    assert not list(out.glob("**/*.replaced-*"))


def _flat(config):
    from metavae.config import flatten

    return flatten(config.to_dict())


# ---------------------------------------------------------------- scheduling, with runs that train nothing
def fake_specs() -> list[RunSpec]:
    """a, b independent; c needs a; d needs c; e needs b."""
    return [RunSpec("a", "fake", None, 0, "a"), RunSpec("b", "fake", None, 0, "b"), RunSpec("c", "fake", None, 0, "c", ("a",)),
            RunSpec("d", "fake", None, 0, "d", ("c",)), RunSpec("e", "fake", None, 0, "e", ("b",))]


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A run kind that writes ``<out>/<name>.done`` (its finished marker) and can be told to fail."""
    state = {"fail": {}, "calls": []}

    def run(spec, deps, out, data_root, progress):
        state["calls"].append(spec.name)
        assert all((out / f"{d.name}.done").is_file() for d in deps)  # dependencies ran first
        if state["fail"].get(spec.name, 0) > 0:
            state["fail"][spec.name] -= 1
            raise RuntimeError(f"boom in {spec.name}\nsecond line")
        (out / f"{spec.name}.done").write_text("ok")

    monkeypatch.setitem(ex.JOBS, "fake", ex.Job(run, lambda spec, deps, out: (out / f"{spec.name}.done").is_file()))
    return state


def test_a_failed_run_is_retried_once(fake, tmp_path):
    fake["fail"] = {"a": 1}
    outcomes = {o.name: o for o in ex.run_manifest(fake_specs(), tmp_path, tmp_path)}
    assert {n: (o.status, o.attempts) for n, o in outcomes.items()} == {
        "a": ("finished", 2), "b": ("finished", 1), "c": ("finished", 1), "d": ("finished", 1), "e": ("finished", 1)}
    assert outcomes["a"].errors == ["RuntimeError: boom in a second line"]  # one line
    assert fake["calls"].count("a") == 2


def test_after_two_failures_the_others_go_on_and_dependents_are_blocked(fake, tmp_path):
    fake["fail"] = {"a": 2}
    outcomes = {o.name: o for o in ex.run_manifest(fake_specs(), tmp_path, tmp_path)}
    assert {n: o.status for n, o in outcomes.items()} == {"a": "failed", "b": "finished", "c": "blocked", "d": "blocked",
                                                          "e": "finished"}
    assert outcomes["a"].attempts == 2 and fake["calls"].count("a") == 2
    assert outcomes["d"].errors == ["needs c"]
    assert "c" not in fake["calls"] and "d" not in fake["calls"]
    text = ex.format_outcomes(list(outcomes.values()))
    assert "failed    a: RuntimeError: boom in a second line" in text and text.endswith("2 finished, 0 skipped, 1 failed, 2 blocked")
    # rerun: the finished runs are skipped, the failed one tried again, its dependents run
    fake["calls"].clear()
    outcomes = {o.name: o.status for o in ex.run_manifest(fake_specs(), tmp_path, tmp_path)}
    assert outcomes == {"a": "finished", "b": "skipped", "c": "finished", "d": "finished", "e": "skipped"}
    assert fake["calls"] == ["a", "c", "d"]


def test_retries_zero_means_no_retry(fake, tmp_path):
    fake["fail"] = {"b": 1}
    outcomes = {o.name: o.status for o in ex.run_manifest(fake_specs(), tmp_path, tmp_path, retries=0)}
    assert outcomes["b"] == "failed" and outcomes["e"] == "blocked" and fake["calls"].count("b") == 1


def test_bad_manifests_are_config_errors(fake, tmp_path):
    with pytest.raises(ConfigError, match="depends on z, which is not in the manifest"):
        ex.run_manifest([RunSpec("a", "fake", None, 0, "a", ("z",))], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="cycle"):
        ex.run_manifest([RunSpec("a", "fake", None, 0, "a", ("b",)), RunSpec("b", "fake", None, 0, "b", ("a",))], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="jobs must be ≥ 1"):
        ex.run_manifest(fake_specs(), tmp_path, tmp_path, jobs=0)


def test_jobs_run_in_processes_with_the_same_results(mnist_root, tmp_path):
    specs = tiny_panel()
    sequential = ex.run_manifest(specs, tmp_path / "one", mnist_root, progress=False)
    parallel = ex.run_manifest(specs, tmp_path / "two", mnist_root, jobs=2, progress=False)
    assert [o.status for o in sequential] == [o.status for o in parallel] == ["finished"] * 3
    for spec in specs[:2]:
        one, two = (json.loads((tmp_path / d / spec.out / "summary.json").read_text()) for d in ("one", "two"))
        for key in ("best_val_iwae", "mean_accuracy", "test_log_likelihood", "steps"):
            assert one[key] == pytest.approx(two[key], rel=1e-4), (spec.name, key)
    assert [o.status for o in ex.run_manifest(specs, tmp_path / "two", mnist_root, jobs=2)] == ["skipped"] * 3


# ---------------------------------------------------------------- the command
def test_cli_list_only_and_errors(tmp_path, capsys):
    from metavae.cli import main

    assert main(["--data-dir", str(tmp_path), "reproduce", "--list", "--only", "mnist/scale_sparse/*", "--preset", "paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:7]] == [f"mnist/scale_sparse/{v}" for v in images.VARIANTS] + ["mnist/scale_sparse/compare"]
    assert "100 epochs" in lines[0] and "a decoder per distribution" in lines[5]
    assert [line for line in lines[7:] if line.startswith("left out: ")] == lines[7:] and len(lines) == 9
    assert main(["--data-dir", str(tmp_path), "reproduce", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert err == "metavae: error: --only nope: no run matches; `metavae reproduce --list` shows the names\n"
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "--preset", "gpu"])
    assert stop.value.code == 2 and len(capsys.readouterr().err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_cli_runs_the_manifest_and_fails_with_one_line(fake, tmp_path, monkeypatch, capsys):
    from metavae.cli import main
    from metavae.experiments import reproduce

    monkeypatch.setattr(reproduce, "manifest", lambda preset, data_root: fake_specs())
    fake["fail"] = {"b": 2}
    out = tmp_path / "out"
    assert main(["--data-dir", str(tmp_path), "reproduce", "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("metavae: error: 2 run(s) did not finish (b, e); run the same command again to retry them "
                            "(finished runs are skipped)\n")
    status = json.loads((out / "reproduce.json").read_text())
    assert {n: r["status"] for n, r in status["runs"].items()} == {"a": "finished", "b": "failed", "c": "finished",
                                                                   "d": "finished", "e": "blocked"}
    assert main(["--data-dir", str(tmp_path), "reproduce", "--out", str(out), "--only", "e"]) == 0  # b, then e
    assert "2 finished, 0 skipped" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "reproduce", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 finished, 5 skipped, 0 failed, 0 blocked" in printed and f"and {out / 'REPORT.md'}" in printed
    assert "## Fig. 6" in (out / "REPORT.md").read_text()
    calls = json.loads((out / "reproduce.json").read_text())["invocations"]  # every invocation, with its wall time
    assert [(c["counts"]["finished"], c["counts"]["skipped"], c["counts"]["failed"], c["only"]) for c in calls] == \
        [(3, 0, 1, []), (2, 0, 0, ["e"]), (0, 5, 0, [])]
    assert all(c["seconds"] > 0 and c["engine"] == "local" for c in calls)
    assert main(["report", str(out)]) == 0 and capsys.readouterr().out == f"wrote {out / 'REPORT.md'}\n"
    assert main(["report", str(out / "nope")]) == 2
    assert capsys.readouterr().err.startswith(f"metavae: error: {out / 'nope'} is not a directory")


# ---------------------------------------------------------------- the other kinds of run
@pytest.mark.parametrize("kind", ["physics", "expfam"])
def test_an_experiment_is_finished_by_its_summary_with_this_config(kind, tmp_path, monkeypatch):
    from metavae.experiments import expfam, physics

    module = {"physics": physics, "expfam": expfam}[kind]
    config = physics.load_physics_config(None) if kind == "physics" else expfam.load_expfam_config(None)
    calls = []

    def report(config, out, progress=True, overwrite=False):  # what the real report writes last
        calls.append(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps({"summary": {}, "config": config.to_dict()}))

    monkeypatch.setattr(module, "report", report)
    spec = RunSpec(kind, kind, config, 0, kind)
    assert [o.status for o in ex.run_manifest([spec], tmp_path, tmp_path)] == ["finished"]
    assert calls == [tmp_path / kind]
    assert [o.status for o in ex.run_manifest([spec], tmp_path, tmp_path)] == ["skipped"]
    other = module.__dict__[f"load_{kind}_config"](None, [("train.max_steps", 7)])
    assert not ex.is_finished(RunSpec(kind, kind, other, 0, kind), [], tmp_path)


def test_invariance_after_its_three_runs(mnist_root, tmp_path):
    from metavae.evaluation.invariance import invariance_config

    runs = [tiny_panel(f, ("metavae",))[0] for f in ("rotate", "scale", "shear")]
    inv = RunSpec("invariance", "invariance", invariance_config([("invariance.examples", 10), ("invariance.pool_size", 20)]),
                  0, "invariance", tuple(r.name for r in runs))
    out = tmp_path / "out"
    assert [o.status for o in ex.run_manifest([*runs, inv], out, mnist_root, progress=False)] == ["finished"] * 4
    result = json.loads((out / "invariance" / "invariance.json").read_text())
    assert [r["run_dir"] for r in result["runs"]] == [str(out / r.out) for r in runs]
    assert [o.status for o in ex.run_manifest([*runs, inv], out, mnist_root)] == ["skipped"] * 4
    other = RunSpec("invariance", "invariance", invariance_config([("invariance.examples", 12), ("invariance.pool_size", 20)]),
                    0, "invariance", inv.depends)
    assert not ex.is_finished(other, runs, out)  # other settings
    summary = out / runs[0].out / "summary.json"
    stamp = (out / "invariance" / "invariance.json").stat().st_mtime  # a dependency finished again after the table
    os.utime(summary, (stamp + 10, stamp + 10))
    assert not ex.is_finished(inv, runs, out)


# ---------------------------------------------------------------- the Ray engine
def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


@pytest.mark.skipif(_has_ray(), reason="ray is installed: the missing-extra message is not reachable")
def test_ray_engine_without_ray_is_one_line(tmp_path, capsys, monkeypatch, fake):
    with pytest.raises(ConfigError, match=r"--engine ray needs Ray: pip install 'metavae\[ray\]'"):
        ex.run_manifest(fake_specs(), tmp_path, tmp_path, engine="ray")
    assert not list(tmp_path.glob("*.done"))
    from metavae.cli import main
    from metavae.experiments import reproduce

    monkeypatch.setattr(reproduce, "manifest", lambda preset, data_root: fake_specs())
    assert main(["--data-dir", str(tmp_path), "reproduce", "--out", str(tmp_path / "out"), "--engine", "ray"]) == 2
    assert capsys.readouterr().err.startswith("metavae: error: --engine ray needs Ray")


def test_ray_engine_gives_the_local_results(mnist_root, tmp_path):
    # `make test-ray` sets METAVAE_REQUIRE_RAY=1: there a missing ray is a failure, not a skip
    ray = __import__("ray") if os.environ.get("METAVAE_REQUIRE_RAY") == "1" else pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        specs = tiny_panel()
        local = ex.run_manifest(specs, tmp_path / "local", mnist_root, progress=False)
        remote = ex.run_manifest(specs, tmp_path / "ray", mnist_root, jobs=2, engine="ray")
    finally:
        ray.shutdown()
    assert [o.status for o in local] == [o.status for o in remote] == ["finished"] * 3
    for spec in specs[:2]:
        one, two = (json.loads((tmp_path / d / spec.out / "summary.json").read_text()) for d in ("local", "ray"))
        for key in ("best_val_iwae", "mean_accuracy", "test_log_likelihood", "steps"):
            assert one[key] == pytest.approx(two[key], rel=1e-4), (spec.name, key)


def test_ctrl_c_says_how_to_continue(tmp_path, capsys, monkeypatch):
    from metavae.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "run_manifest", interrupted)
    assert main(["--data-dir", str(tmp_path), "reproduce", "--only", "physics", "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err == ("metavae: interrupted (run the same command again: finished runs are reused, "
                                       "unfinished ones resume; checkpoints are written atomically)\n")


def test_runs_get_absolute_paths_for_other_working_directories(monkeypatch, tmp_path):
    """Ray tasks (and spawned processes) may run in another working directory: they get absolute paths."""
    seen = []
    monkeypatch.setitem(ex.JOBS, "fake", ex.Job(lambda spec, deps, out, data_root, progress: seen.append((out, data_root)),
                                                lambda spec, deps, out: False))
    monkeypatch.chdir(tmp_path)
    ex.run_manifest([RunSpec("a", "fake", None, 0, "a")], "runs/here", "data", progress=False)
    assert seen == [(tmp_path / "runs" / "here", tmp_path / "data")]
