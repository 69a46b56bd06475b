r"""The comparison report on analytic posteriors and a fake task (no training)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import tempfile
import warnings

import pytest
import torch

from jsbi.diagnostics import compare
from tests.diagnostics.analytic import GaussianPosterior, GaussianTask

HISTORIES = {
    "exact": {"train_loss": [3.0, 2.0, 1.5], "validation_loss": [3.1, 2.2, 1.7]},
    "shrunk": {
        "train_loss": [3.0, 2.0],
        "validation_loss": [3.0, 2.5],
        "train_lambda": [0.0, 0.4],
        "wall_time": 1.5,
    },
}


def _compare(posteriors, **kwargs):
    # The report on the Gaussian task at observations 1 and 2, small settings.
    small = {"num_sbc": 100, "num_posterior_samples": 100, "num_c2st_samples": 200}
    return compare(posteriors, GaussianTask(), observations=(1, 2), **{**small, **kwargs})


def _two_methods(**kwargs):
    # An exact posterior and an over-confident one, on the Gaussian task.
    posteriors = {"exact": GaussianPosterior(), "shrunk": GaussianPosterior(scale=0.5)}
    return _compare(posteriors, **kwargs), posteriors


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    report, _ = _two_methods(histories=HISTORIES)
    out = tmp_path_factory.mktemp("report")
    return report, report.save(out), out


def test_methods_diagnosed_side_by_side_give_what_one_process_gives(saved):
    report, _, _ = saved  # two methods, diagnosed in two processes (n_jobs=-1)
    alone, posteriors = _two_methods(n_jobs=1)
    for name in posteriors:
        assert report.methods[name].rows(name) == alone.methods[name].rows(name)
        assert torch.equal(report.methods[name].samples[1], alone.methods[name].samples[1])


def test_verdicts(saved):
    report, _, _ = saved
    assert report.methods["exact"].coverage.verdict == "calibrated"
    assert report.methods["shrunk"].coverage.verdict == "over-confident"
    assert report.methods["exact"].c2st[1] < report.methods["shrunk"].c2st[1]
    sentences = report.verdict()
    assert sentences[0].startswith("Calibrated on both coverage and SBC: exact")
    # NLTP over 100 held-out pairs separates them beyond the standard error.
    assert any(s.startswith("Lowest NLTP: exact,") for s in sentences), sentences


def test_the_verdict_says_level_within_noise_flags_every_cap_and_names_the_mixture():
    import matplotlib

    matplotlib.use("Agg")
    twins = {"a": GaussianPosterior(), "b": GaussianPosterior()}
    capped = {"stopped_by": "the epoch cap", "epochs_trained": 5, "converged": False}
    measured = {"proxy_minus_flow": 0.12, "proxy_minus_flow_se": 0.05}
    measured |= {"mixture_minus_flow": -0.08, "mixture_minus_flow_se": 0.02}
    mixture = {"posterior": "mixture", "final_proxy": measured}
    report = compare(
        twins,
        GaussianTask(),
        observations=(1, 2, 3),
        num_sbc=60,
        num_posterior_samples=60,
        num_c2st_samples=200,
        histories={"a": mixture, "b": capped},
    )
    sentences = report.verdict()
    # What a method returns, and by how much its validation NLL chose it.
    assert (
        "a returns the equal mixture of its flow and its likelihood proxy; validation NLL "
        "minus the flow's: proxy +0.120 ± 0.050 and mixture -0.080 ± 0.020 nats per pair."
    ) in sentences, sentences
    assert any("are level" in s and s.startswith("C2ST") for s in sentences), sentences
    assert not any(s.startswith("Lowest C2ST") for s in sentences)
    assert any(s.startswith("Warning: b stopped at its epoch cap (5 epochs)") for s in sentences)


def test_results_csv(saved):
    _, _, out = saved
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert set(rows[0]) == {"method", "observation", "metric", "value"}
    keys = {(r["method"], r["observation"], r["metric"]) for r in rows}
    for m in ("exact", "shrunk"):
        for i in ("1", "2"):
            assert (m, i, "c2st") in keys and (m, i, "leakage") in keys
        for metric in ("nltp", "sbc_calibrated", "coverage_max_deviation", "tarp_atc"):
            assert (m, "all", metric) in keys
    assert ("shrunk", "all", "wall_time") in keys
    assert len(keys) == len(rows)  # one row per method x observation x metric
    assert all(float(r["value"]) == float(r["value"]) for r in rows)


def test_figures_and_html(saved):
    _, index, out = saved
    names = {"coverage.png", "tarp.png", "sbc_ecdf.png", "training.png"}
    names |= {"pairplot_obs1.png", "pairplot_obs2.png"}
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = index.read_text()
    assert set(re.findall(r'<img src="([^"]+)"', page)) == names
    assert 'id="results"' in page and "over-confident" in page
    # Readable metric names, three significant digits.
    assert "NLTP standard error" in page and "nltp_stderr" not in page
    table = page.split('id="results"')[1].split("</table>")[0]
    cells = re.findall(r"<td>([^<]+)</td>", table)
    assert cells
    for cell in cells:
        assert cell == f"{float(cell):.3g}" or cell == str(int(float(cell))), cell


def test_netcdf_reopens(saved):
    import arviz as az

    report, _, out = saved
    idata = az.from_netcdf(out / "samples.nc")
    post = idata.posterior
    # arviz's conventions: parameters are the variables, methods a coordinate.
    assert set(post.data_vars) == {"theta_1", "theta_2"}
    assert post["theta_1"].dims == ("chain", "draw", "estimator", "observation")
    # 200 independent draws as 4 chains of 50: arviz's R-hat is finite (and near 1).
    assert post["theta_1"].shape == (4, 50, 2, 2)
    assert list(post["estimator"].values) == ["exact", "shrunk"]
    assert list(post["observation"].values) == [1, 2]
    exact = report.methods["exact"].samples[2][:, 1].numpy()
    drawn = post["theta_2"].sel(estimator="exact", observation=2).values.reshape(-1)
    assert (drawn == exact).all()
    rhat = az.rhat(post)["theta_1"].values
    assert ((rhat > 0.9) & (rhat < 1.1)).all()
    observed = idata.observed_data["x"]
    assert (observed.sel(observation=1).values == report.observations[1].numpy()[0]).all()
    ranks = idata["sbc_ranks"]
    shrunk = report.methods["shrunk"].sbc.ranks.numpy()
    assert (ranks["theta_1"].sel(estimator="shrunk").values == shrunk[:, 0]).all()
    assert idata["reference_posterior"]["theta_1"].dims == ("chain", "draw", "observation")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_html_renders_in_chromium(saved):
    _, index, _ = saved
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                index.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    assert re.search(r'<body[^>]*data-images-loaded="true"', dom), dom[:500]
    assert 'id="results"' in dom


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_a_screenshot_of_the_report_is_a_styled_page(saved, tmp_path):
    from PIL import Image

    _, index, _ = saved
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--window-size=1280,2000",
                "--virtual-time-budget=10000",
                f"--screenshot={shot}",
                index.as_uri(),
            ],
            capture_output=True,
            timeout=60,
        )
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20) or []
    # Not a blank page: the heading's rule (#2b6cb0) and the figures draw many colours.
    assert len(colors) > 50
    assert any(c[1] == (0x2B, 0x6C, 0xB0) for c in colors)


@pytest.mark.slow
def test_run_report_end_to_end(tmp_path, capsys):
    from jsbi.pipeline import run_report

    report = run_report(
        "two_moons",
        500,
        ("npe", "sbi-npe"),
        tmp_path,
        max_epochs=2,
        observations=(1,),
        num_sbc=50,
        num_posterior_samples=50,
        num_c2st_samples=300,
        show_progress_bar=True,
    )
    # Progress per step: the simulations, each method's training, each diagnostic.
    err = capsys.readouterr().err
    assert "Simulating" in err and "training jsbi-npe" in err and "training sbi-npe" in err
    assert "Training" in err  # jsbi's epoch bar
    for step in ("jsbi-npe, SBC", "jsbi-npe, TARP", "sbi-npe, NLTP", "sbi-npe, observation 1"):
        assert f"Diagnostics: {step}" in err, step
    assert set(report.methods) == {"jsbi-npe", "sbi-npe"}
    assert (tmp_path / "training.png").exists() and (tmp_path / "index.html").exists()
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {r["method"] for r in rows} == {"jsbi-npe", "sbi-npe"}


def test_compare_takes_your_own_observed_data():
    # A plain simulator (jsbi.wrap's kind) has no numbered observations: pass x_o itself.
    import jsbi

    task = GaussianTask()
    sim = jsbi.wrap(task.simulate, task.prior, name="toy")
    x_o = torch.tensor([0.3, -0.2])
    report = compare(
        {"exact": GaussianPosterior()},
        sim,
        observations={1: x_o},
        num_sbc=50,
        num_posterior_samples=50,
        num_c2st_samples=100,
    )
    res = report.methods["exact"]
    assert res.c2st == {} and res.samples[1].shape == (100, 2)
    # No reference: sbi's local C2ST tests the posterior at the observation instead.
    assert 0.0 <= res.lc2st[1] <= 1.0
    assert any(r["metric"] == "lc2st_p_value" for r in res.rows("exact"))
    assert torch.equal(report.observations[1], x_o[None])
    with pytest.raises(ValueError, match=r"observations\[1\] must have the simulator's shape"):
        compare({"exact": GaussianPosterior()}, sim, observations={1: torch.zeros(3)})
    with pytest.raises(ValueError, match="n_jobs must be a nonzero int"):
        compare({"exact": GaussianPosterior()}, sim, observations={1: x_o}, n_jobs=0)


def test_the_summary_gives_a_verdict_and_flags_an_epoch_cap(saved):
    report, index, _ = saved
    sentences = report.verdict()
    # Calibration first; C2ST over two observations may or may not separate them, but
    # the shrunk posterior is never the one named best.
    assert sentences[0] == "Calibrated on both coverage and SBC: exact."
    assert any(
        s.startswith(("Lowest C2ST: exact,", "C2ST: exact and shrunk are level"))
        for s in sentences
    )
    assert not any(s.startswith("Lowest C2ST: shrunk") for s in sentences)
    assert not any("epoch cap" in v for v in sentences)
    capped = compare(
        {"exact": GaussianPosterior()},
        GaussianTask(),
        observations=(1,),
        num_sbc=50,
        num_posterior_samples=50,
        num_c2st_samples=100,
        histories={"exact": {"epochs_trained": 7, "converged": False}},
    )
    assert capped.verdict()[-1].startswith("Warning: exact stopped at its epoch cap (7 epochs)")
    page = index.read_text()
    assert 'id="verdict"' in page and "C2ST (mean" in page
    # One colour per method, the same for the legend swatch and every figure.
    assert report.colors() == {"exact": "C0", "shrunk": "C1"}


def test_c2st_classifier_is_the_one_asked_recorded_and_named():
    from jsbi.diagnostics import c2st

    with pytest.raises(ValueError, match="c2st_classifier must be one of"):
        _compare({"exact": GaussianPosterior()}, c2st_classifier="svm")
    # The default is the random forest: sbi's, and 6 times faster than sbibm's MLP.
    kinds = (("rf", "random forest", {}), ("mlp", "sbibm's MLP", {"c2st_classifier": "mlp"}))
    for kind, words, asked in kinds:
        report = _compare({"shrunk": GaussianPosterior(scale=0.5)}, n_jobs=1, **asked)
        res = report.methods["shrunk"]
        direct = c2st(res.samples[1], report.references[1][:200], seed=0, classifier=kind)
        assert res.c2st[1] == pytest.approx(direct)
        assert report.settings["c2st_classifier"] == kind
        assert f"C2ST ({words})" in report.summary()


class _ExactEnergy(torch.nn.Module):
    # GaussianTask's posterior up to a constant: prior N(0, I), x ~ N(theta, 0.5^2 I).
    def forward(self, theta, x):
        return 0.5 * theta.square().sum(-1) + 2.0 * (x - theta).square().sum(-1)


def _proxy_posterior(steps):
    # The exact energy, proposed by an untrained flow (a poor proposal), by MCMC.
    from jsbi.flows import build_conditional_flow
    from jsbi.posteriors import ProxyPosterior

    task = GaussianTask()
    torch.manual_seed(0)
    theta = task.prior.sample((300,))
    flow = build_conditional_flow(
        theta, task.simulate(theta), task.prior, hidden_features=(16,), num_transforms=1
    )
    return ProxyPosterior(flow, _ExactEnergy(), task.prior, mcmc_steps=steps, mcmc_max_steps=steps)


def test_the_report_keeps_each_observation_s_mixing_and_says_where_chains_did_not_mix():
    import matplotlib

    matplotlib.use("Agg")
    posteriors = {"short": _proxy_posterior(1), "long": _proxy_posterior(30)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the proxy's chains may not have mixed")
        # Diagnosed side by side: the mixing comes back from the worker processes.
        report = _compare(posteriors, num_sbc=30, num_posterior_samples=50, num_c2st_samples=500)
    for name in posteriors:
        assert set(report.methods[name].mixing) == {1, 2}
    assert report.methods["short"].mixing[1]["num_steps"] == 1
    sentences = report.verdict()
    for i in (1, 2):
        flagged = [s for s in sentences if f"chains may not have mixed at observation {i}:" in s]
        assert [s.split("'")[0] for s in flagged] == ["short"], sentences
    keys = {(r["method"], r["observation"], r["metric"]) for r in report.rows()}
    assert {("short", "1", "mcmc_drift"), ("long", "2", "mcmc_imh_acceptance")} <= keys
    # Analytic posteriors run no chains: nothing recorded, nothing said.
    assert not _two_methods()[0].methods["exact"].mixing
