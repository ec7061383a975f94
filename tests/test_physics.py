"""The inclined-plane simulator and its exact posterior (PAPER.md §3), checked against closed forms
and an independent Monte Carlo estimate."""

from __future__ import annotations

import math

import pytest
import torch

from metavae.data.physics import TEST_PLANES, TRAIN_PLANES, InclinedPlane, descent_time
from metavae.evaluation.exact_posterior import exact_posterior, posterior_density


def test_the_paper_grids():
    assert len(TRAIN_PLANES) == 25 and len(TEST_PLANES) == 304
    assert {L for L, _ in TRAIN_PLANES} == {2, 4, 6, 8, 10} and {A for _, A in TRAIN_PLANES} == {20, 30, 40, 50, 60}
    assert {L for L, _ in TEST_PLANES} == set(range(1, 20)) and {A for _, A in TEST_PLANES} == set(range(5, 81, 5))


def test_closed_form_time_by_hand():
    """L = 10 m, A = 30°, μ = 0.1: a = 9.8·(0.5 − 0.8660·0.1) = 4.0513 m/s², t = √(20/a) = 2.2219 s."""
    t = descent_time(torch.tensor(10.0, dtype=torch.float64), torch.tensor(30.0, dtype=torch.float64),
                     torch.tensor(0.1, dtype=torch.float64))
    a = 9.8 * (0.5 - math.cos(math.radians(30)) * 0.1)
    assert float(t) == pytest.approx(math.sqrt(20 / a), rel=1e-12)


def test_euler_integration_agrees_with_the_closed_form_within_its_step_error():
    """Explicit Euler from rest is past L first at n·dt with T < n·dt ≤ T + 2·dt; also checked against a
    literal step-by-step integration for a few boxes."""
    g = torch.Generator().manual_seed(0)
    length = 1 + 18 * torch.rand(2000, generator=g, dtype=torch.float64)
    angle = 20 + 60 * torch.rand(2000, generator=g, dtype=torch.float64)
    mu = 0.3 * torch.rand(2000, generator=g, dtype=torch.float64)
    exact = descent_time(length, angle, mu)
    euler = descent_time(length, angle, mu, "euler", dt=0.005)
    assert bool(torch.isfinite(exact).all())
    gap = euler - exact
    assert float(gap.min()) > 0 and float(gap.max()) <= 2 * 0.005
    for i in range(3):  # the recursion itself, one box at a time
        a = 9.8 * (math.sin(math.radians(angle[i])) - math.cos(math.radians(angle[i])) * mu[i])
        x = v = 0.0
        n = 0
        while x < float(length[i]):
            x, v, n = x + v * 0.005, v + a * 0.005, n + 1
        assert float(euler[i]) == pytest.approx(n * 0.005, abs=1e-9)


def test_a_box_that_does_not_slide_is_flagged_not_given_a_sentinel_time():
    sim = InclinedPlane()
    out = sim.simulate(torch.tensor([5.0, 5.0]), torch.tensor([10.0, 60.0]), 4000, torch.Generator().manual_seed(1))
    tan = math.tan(math.radians(10))
    assert torch.equal(out.slid[0], out.mu[0] < tan)  # at 10°, exactly the boxes with μ < tan 10° slide
    assert bool(out.slid[1].all())  # tan 60° > 1: every box of the prior slides
    assert bool(torch.isinf(out.time[~out.slid]).all()) and bool(torch.isfinite(out.time[out.slid]).all())
    noise = out.time[out.slid] - descent_time(out.length[:, None], out.angle[:, None], out.mu)[out.slid]
    assert float(noise.std()) == pytest.approx(0.02, rel=0.05)  # measurement noise σ = 0.02 s


def test_simulation_shapes_prior_and_seeding():
    sim = InclinedPlane()
    planes = torch.tensor(TEST_PLANES, dtype=torch.float64)
    a = sim.simulate(planes[:, 0], planes[:, 1], 50, torch.Generator().manual_seed(7))
    b = sim.simulate(planes[:, 0], planes[:, 1], 50, torch.Generator().manual_seed(7))
    assert a.mu.shape == a.time.shape == a.slid.shape == (304, 50)
    assert torch.equal(a.mu, b.mu) and torch.equal(a.time, b.time)
    assert float(a.mu.min()) >= 1e-4 and float(a.mu.max()) <= 1.0
    with pytest.raises(ValueError, match="length, angle"):
        sim.simulate(torch.tensor([1.0]), torch.tensor([95.0]), 3)


def _observations(n=400, seed=3):
    sim = InclinedPlane()
    planes = torch.tensor(TEST_PLANES, dtype=torch.float64)
    pick = torch.randint(0, 304, (n,), generator=torch.Generator().manual_seed(seed))
    out = sim.simulate(planes[pick, 0], planes[pick, 1], 1, torch.Generator().manual_seed(seed))
    return out.time[:, 0], out.slid[:, 0], out.length, out.angle, out.mu[:, 0]


def test_the_exact_posterior_integrates_to_one_and_is_zero_where_the_observation_is_impossible():
    time, slid, length, angle, _ = _observations()
    mu, density = posterior_density(time, slid, length, angle)
    step = mu[:, 1] - mu[:, 0]
    mass = (density.sum(1) - (density[:, 0] + density[:, -1]) / 2) * step
    torch.testing.assert_close(mass, torch.ones_like(mass))
    tan = torch.tan(torch.deg2rad(angle))
    impossible = torch.where(slid[:, None], mu >= tan[:, None], mu < tan[:, None])
    assert bool((density[impossible] == 0).all())
    assert (~slid).any() and slid.any()  # both kinds of observation were checked


def test_the_posterior_mean_matches_self_normalised_importance_sampling_from_the_prior():
    """An independent estimate: μ_k ~ prior, weights = the likelihood written here (Gaussian in the
    closed-form time, or the indicator μ ≥ tan A), mean = Σ w μ / Σ w; within 5 Monte Carlo errors."""
    time, slid, length, angle, _ = _observations(60, seed=5)
    summary = exact_posterior(time, slid, length, angle)
    g = torch.Generator().manual_seed(11)
    mu = 1e-4 + (1 - 1e-4) * torch.rand(400_000, generator=g, dtype=torch.float64)
    for i in range(60):
        rad = math.radians(float(angle[i]))
        a = 9.8 * (math.sin(rad) - math.cos(rad) * mu)
        if bool(slid[i]):
            t = torch.sqrt(2 * float(length[i]) / a.clamp_min(1e-300))
            w = torch.where(a > 0, torch.exp(-0.5 * ((float(time[i]) - t) / 0.02) ** 2), torch.zeros_like(a))
        else:
            w = (a <= 0).double()
        w = w / w.sum()
        estimate = float((w * mu).sum())
        ess = 1 / float((w * w).sum())
        sd = math.sqrt(float((w * (mu - estimate) ** 2).sum()))
        assert abs(float(summary.mean[i]) - estimate) <= 5 * sd / math.sqrt(ess) + 1e-5, (i, float(summary.mean[i]), estimate)


def test_credible_intervals_cover_the_true_parameter_at_their_level():
    """Under the model the true μ falls in the central 50 % / 90 % interval with those frequencies."""
    time, slid, length, angle, mu = _observations(4000, seed=8)
    summary = exact_posterior(time, slid, length, angle)
    for level in (0.5, 0.9):
        lo, hi = summary.intervals[level]
        coverage = float(((mu >= lo) & (mu <= hi)).double().mean())
        assert abs(coverage - level) < 4 * math.sqrt(level * (1 - level) / 4000), (level, coverage)
    assert bool((summary.variance >= 0).all())


def test_a_non_sliding_observation_has_the_uniform_posterior_above_tan_a():
    summary = exact_posterior(torch.tensor([math.inf]), torch.tensor([False]), torch.tensor([3.0]), torch.tensor([20.0]))
    tan = math.tan(math.radians(20))
    assert float(summary.mean[0]) == pytest.approx((tan + 1) / 2, abs=1e-12)
    assert float(summary.variance[0]) == pytest.approx((1 - tan) ** 2 / 12, rel=1e-12)
    lo, hi = summary.intervals[0.9]
    assert (float(lo[0]), float(hi[0])) == pytest.approx((tan + 0.05 * (1 - tan), tan + 0.95 * (1 - tan)), abs=1e-12)
    density_grid, density = posterior_density(torch.tensor([math.inf]), torch.tensor([False]), torch.tensor([3.0]),
                                              torch.tensor([20.0]))  # the grid agrees with the closed form
    assert float(density_grid[0, 0]) == pytest.approx(tan) and torch.allclose(density[0], torch.full_like(density[0], 1 / (1 - tan)))


def test_the_posterior_grid_has_converged():
    """The default grids (257 coarse, 513 fine points) give the means and intervals of grids four times finer."""
    time, slid, length, angle, _ = _observations(300, seed=9)
    default = exact_posterior(time, slid, length, angle)
    fine = exact_posterior(time, slid, length, angle, grid_size=2049)
    torch.testing.assert_close(default.mean, fine.mean, rtol=0, atol=2e-5)
    for level in (0.5, 0.9):
        torch.testing.assert_close(default.intervals[level][0], fine.intervals[level][0], rtol=0, atol=2e-4)


@pytest.mark.parametrize("length, angle, floor", [(10.0, 20.0, 0.021), (2.0, 70.0, 0.011), (10.0, 5.0, 0.062)])
def test_the_bayes_optimal_mse_is_the_floor_that_paper_md_reports(length, angle, floor):
    """PAPER.md §3: no estimator can beat ≈0.021 at A = 20° (a box that stops only says μ ≥ tan A),
    ≈0.011 at A = 70°, L = 2 (noise dominates short descents), ≈0.062 at 5°. 2000 simulations:
    the Monte Carlo error of the MSE is ≈ 3 % of it."""
    out = InclinedPlane().simulate(torch.tensor([length]), torch.tensor([angle]), 2000, torch.Generator().manual_seed(12))
    post = exact_posterior(out.time[0], out.slid[0], out.length.expand(2000), out.angle.expand(2000))
    mse = float(((post.mean - out.mu[0]) ** 2).mean())
    assert mse == pytest.approx(floor, rel=0.12)


def test_the_physics_task_examples_are_time_slid_mu_and_the_plane():
    """A box is ``(measured time or 0, slid, μ, L, A)``: times match the simulator's noise-free time for
    that μ to within the noise, a box that stopped has time 0 and μ ≥ tan A."""
    from metavae.data.physics_task import PhysicsTask

    task = PhysicsTask(((10.0, 20.0),), simulations=500, context_size=5)
    batch = task.distribution_batch("L=10,A=20", "test", None, 50, torch.Generator().manual_seed(0))
    x = batch.x.double()
    assert batch.x.shape == (500, 5) and batch.x.dtype == torch.float32 and batch.labels is None
    assert bool((x[:, 3] == 10).all()) and bool((x[:, 4] == 20).all())
    slid = x[:, 1] == 1
    assert (~slid).any() and slid.any()
    assert bool((x[~slid, 0] == 0).all()) and bool((x[~slid, 2] >= math.tan(math.radians(20)) - 1e-6).all())
    expected = descent_time(torch.tensor(10.0, dtype=torch.float64), torch.tensor(20.0, dtype=torch.float64), x[slid, 2])
    assert float((x[slid, 0] - expected).abs().max()) < 6 * 0.02
    assert task.held_out_names()[0] == "L=1,A=5" and len(task.held_out_names()) == 303  # 304 test planes minus this one


def test_with_euler_times_the_posterior_mean_matches_importance_sampling():
    """The 2020 code's Euler descent (n·dt with n the first step past L: n(n−1)·a·dt²/2 ≥ L, found here
    by a search over n rather than the library's closed form) as the likelihood's mean time."""
    sim = InclinedPlane(method="euler")
    planes = torch.tensor([[2.0, 40.0], [9.0, 55.0], [15.0, 30.0]], dtype=torch.float64)
    out = sim.simulate(planes[:, 0], planes[:, 1], 8, torch.Generator().manual_seed(4))
    time, slid = out.time.reshape(-1), out.slid.reshape(-1)
    length, angle = planes[:, 0].repeat_interleave(8), planes[:, 1].repeat_interleave(8)
    summary = exact_posterior(time, slid, length, angle, sim)
    mu = 1e-4 + (1 - 1e-4) * torch.rand(100_000, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    for i in torch.nonzero(slid).squeeze(1).tolist():
        rad = math.radians(float(angle[i]))
        a = 9.8 * (math.sin(rad) - math.cos(rad) * mu)
        need = 2 * float(length[i]) / (a.clamp_min(1e-300) * 0.005**2)  # n(n−1) ≥ need
        n = torch.floor(torch.sqrt(need)).clamp_min(1)
        for _ in range(3):  # step up to the first n with n(n−1) ≥ need (√need ≤ n ≤ √need + 1)
            n = torch.where(n * (n - 1) < need, n + 1, n)
        t = n * 0.005
        w = torch.where(a > 0, torch.exp(-0.5 * ((float(time[i]) - t) / 0.02) ** 2), torch.zeros_like(a))
        w = w / w.sum()
        estimate = float((w * mu).sum())
        ess = 1 / float((w * w).sum())
        sd = math.sqrt(float((w * (mu - estimate) ** 2).sum()))
        assert abs(float(summary.mean[i]) - estimate) <= 5 * sd / math.sqrt(ess) + 1e-4, (i, float(summary.mean[i]), estimate)
