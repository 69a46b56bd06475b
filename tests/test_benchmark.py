from __future__ import annotations

import csv
import math
import os
import shutil

import pytest

from jsbi.benchmark import (
    code_version,
    comparison_table,
    load_rows,
    run_benchmark,
    summary_table,
    write_results,
    write_rows,
)
from jsbi.cli import main

TINY = dict(observations=[1, 6], num_samples=200, max_epochs=2)


def _same(a, b):
    # Rows equal, NaN (a flow posterior's MCMC columns) equal to NaN.
    def key(rows):
        return [{k: ("nan" if v != v else v) for k, v in r.items()} for r in rows]

    return key(a) == key(b)


def test_units_rows_resume_and_summary(tmp_path, capsys):
    rows = run_benchmark(["two_moons"], [200], ["npe", "sbi-npe"], out=tmp_path, **TINY)
    assert len(rows) == 4  # 2 methods x 2 observations
    assert {r["method"] for r in rows} == {"npe", "sbi-npe"}
    assert all(0.0 <= r["c2st"] <= 1.0 and r["epochs"] >= 1 for r in rows)
    files = sorted((tmp_path / "rows").glob("*.csv"))
    assert [f.name for f in files] == ["two_moons_200_0_npe.csv", "two_moons_200_0_sbi-npe.csv"]
    assert not list((tmp_path / "checkpoints").glob("*"))  # finished units leave none
    assert "it/s" not in capsys.readouterr().err  # sbi's sampling draws no progress bar

    # A rerun reads the finished units instead of training again, silently where this
    # code trained them, with a line where other code did.
    stamps = {f: os.stat(f).st_mtime_ns for f in files}
    again = run_benchmark(["two_moons"], [200], ["npe", "sbi-npe"], out=tmp_path, **TINY)
    assert _same(again, rows) and stamps == {f: os.stat(f).st_mtime_ns for f in files}
    assert "read back" not in capsys.readouterr().out
    npe_rows = [r for r in rows if r["method"] == "npe"]
    write_rows(files[0], [r | {"code": "0000000"} for r in npe_rows])
    run_benchmark(["two_moons"], [200], ["npe"], out=tmp_path, **TINY)
    assert f"read back, trained by 0000000, not this run's {code_version()}" in (
        capsys.readouterr().out
    )
    write_rows(files[0], npe_rows)
    assert _same(load_rows(tmp_path), sorted(rows, key=lambda r: r["method"]))
    # A finished unit answers for the observations it was scored on, and refuses new ones.
    (only_6,) = run_benchmark(
        ["two_moons"], [200], ["npe"], out=tmp_path, **{**TINY, "observations": [6]}
    )
    assert _same(
        [only_6], [next(r for r in rows if r["method"] == "npe" and r["observation"] == 6)]
    )
    with pytest.raises(ValueError, match=r"observations \[3\] were asked for"):
        run_benchmark(  # refused before the unfinished srfe unit starts
            ["two_moons"], [200], ["npe", "srfe"], out=tmp_path, **{**TINY, "observations": [1, 3]}
        )
    assert not list(tmp_path.glob("*/two_moons_200_0_srfe.*"))

    # A finished unit trained with another support than the method now uses is refused.
    default = rows[0]["support"] if rows[0]["method"] == "npe" else rows[-1]["support"]
    other = {"transform": "truncate", "truncate": "transform"}[default]
    with pytest.raises(ValueError, match=f"trained with support='{default}'"):
        run_benchmark(
            ["two_moons"], [200], ["npe"], out=tmp_path, options={"support": other}, **TINY
        )
    assert {r["support"] for r in rows if r["method"] == "sbi-npe"} == {"sbi"}
    # So is one read for a run with an embedding it was not trained with (sbi's too).
    for method in ("npe", "sbi-npe"):
        with pytest.raises(ValueError, match="trained with embedding='none'"):
            run_benchmark(
                ["two_moons"], [200], [method], out=tmp_path, options={"embedding": "mlp"}, **TINY
            )
    # So is one trained with other transforms: a row file of autoregressive ones for
    # slcp, asked for with coupling ones (passes=2).
    assert {r["transforms"] for r in rows} == {"autoregressive", "sbi"}
    old = [r | {"task": "slcp"} for r in rows if r["method"] == "npe"]
    write_rows(tmp_path / "rows" / "slcp_200_0_npe.csv", old)
    with pytest.raises(ValueError, match="trained with transforms='autoregressive'"):
        run_benchmark(["slcp"], [200], ["npe"], out=tmp_path, options={"passes": 2}, **TINY)
    # With the default (autoregressive) transforms the old unit answers.
    kept = run_benchmark(["slcp"], [200], ["npe"], out=tmp_path, **TINY)
    assert [r["c2st"] for r in kept] == [r["c2st"] for r in old]
    (tmp_path / "rows" / "slcp_200_0_npe.csv").unlink()
    # And one that returned another posterior: a jeffreys row file that returned the
    # flow; jeffreys now returns auto's choice.
    assert {(r["posterior"], r["returned"]) for r in rows} == {("flow", "flow"), ("sbi", "sbi")}
    old = [r | {"method": "jeffreys"} for r in rows if r["method"] == "npe"]
    write_rows(tmp_path / "rows" / "two_moons_200_0_jeffreys.csv", old)
    with pytest.raises(ValueError, match="trained with posterior='flow'.* posterior='auto'"):
        run_benchmark(["two_moons"], [200], ["jeffreys"], out=tmp_path, **TINY)
    kept = run_benchmark(
        ["two_moons"], [200], ["jeffreys"], out=tmp_path, options={"posterior": "flow"}, **TINY
    )
    assert [r["c2st"] for r in kept] == [r["c2st"] for r in old]
    (tmp_path / "rows" / "two_moons_200_0_jeffreys.csv").unlink()
    # A row file of an older jsbi, without a column the harness now writes, is refused.
    old = [{k: v for k, v in r.items() if k != "transforms"} for r in rows]
    write_rows(tmp_path / "rows" / "two_moons_200_0_srfe.csv", old)
    with pytest.raises(ValueError, match="written by an older jsbi"):
        run_benchmark(["two_moons"], [200], ["srfe"], out=tmp_path, **TINY)
    (tmp_path / "rows" / "two_moons_200_0_srfe.csv").unlink()

    table = summary_table(rows)
    # two_moons is a development task: observation 1 is development, 6 held out.
    assert "| two_moons | 200 | dev | npe |" in table
    assert "| two_moons | 200 | held-out | sbi-npe |" in table
    summary = write_results(rows, tmp_path / "results")
    # 2 comparison lines (dev, held-out) + 4 per-method lines
    assert summary.read_text().count("| two_moons |") == 6
    assert (tmp_path / "results" / "c2st_two_moons.png").stat().st_size > 0
    with open(tmp_path / "results" / "benchmark.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_same_seed_same_numbers(tmp_path):
    a = run_benchmark(["gaussian_mixture"], [150], ["npe"], **TINY)
    b = run_benchmark(["gaussian_mixture"], [150], ["npe"], **TINY)
    assert [r["c2st"] for r in a] == [r["c2st"] for r in b]


def test_bad_grid_raises_before_work():
    with pytest.raises(ValueError, match="methods must be among"):
        run_benchmark(["two_moons"], [100], ["nope"])
    with pytest.raises(ValueError, match="unknown task"):
        run_benchmark(["no_such_task"], [100], ["npe"])
    with pytest.raises(ValueError, match="budgets must be positive"):
        run_benchmark(["two_moons"], [0], ["npe"])
    # An option the estimator would refuse fails before any unit trains, naming the method
    # and the closest option.
    with pytest.raises(ValueError, match="method 'jeffreys': .*did you mean 'gate_samples'"):
        run_benchmark(["two_moons"], [100], ["npe", "jeffreys"], options={"gate_sample": 8})
    with pytest.raises(ValueError, match="method 'jeffreys': warmup_epochs apply to sched"):
        run_benchmark(["two_moons"], [100], ["jeffreys"], options={"warmup_epochs": 0})


def test_a_method_is_a_named_config_checked_when_built():
    import jsbi
    from jsbi.benchmark import METHODS, method_columns, method_options
    from jsbi.methods import METHODS as REGISTRY

    assert list(METHODS) == [*REGISTRY, "sbi-npe"]  # the one registry, and sbi's NPE
    # Extra options: the flow's to every jsbi method, the symmetric objectives' to those
    # only; device to none (run_unit takes it for every method).
    extra = {"passes": 2, "proxy": "ratio", "gate_samples": 8, "device": "cpu"}
    assert method_options("npe", extra) == {"passes": 2}
    assert method_options("jeffreys", extra) == {"passes": 2, "proxy": "ratio", "gate_samples": 8}
    # What a unit records follows the same options the unit trains with.
    slcp, moons = jsbi.get_task("slcp"), jsbi.get_task("two_moons")
    assert method_columns("npe", moons, {"posterior": "proxy"})["posterior"] == "flow"
    assert method_columns("jeffreys", moons)["posterior"] == "auto"
    assert method_columns("jeffreys", moons, {"proxy": "ratio"})["posterior"] == "flow"
    assert method_columns("jeffreys", slcp, {"passes": 2})["transforms"] == "coupling"
    assert method_columns("jeffreys", moons, {"passes": 2})["transforms"] == "autoregressive"
    assert method_columns("sbi-npe", moons) == {
        "support": "sbi",
        "transforms": "sbi",
        "posterior": "sbi",
    }
    for options, match in (
        ({"proxi": "ratio"}, "method 'jeffreys': .*did you mean 'proxy'"),
        ({"gate_samples": 1}, "method 'jeffreys': gate_samples must be an int >= 2"),
    ):
        with pytest.raises(ValueError, match=match):
            method_columns("jeffreys", moons, options)


def test_cli_benchmark_and_summarise(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--tasks", "two_moons", "--num-simulations", "200"]
    argv += ["--objectives", "npe", "--observations", "2", "--num-c2st-samples", "200"]
    argv += ["--max-epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "| two_moons | 200 | dev | npe |" in capsys.readouterr().out
    assert (out / "summary.md").exists() and (out / "rows" / "two_moons_200_0_npe.csv").exists()
    # The summary names the command that regenerates it.
    assert (
        "    jsbi benchmark --tasks two_moons --num-simulations 200 --objectives npe "
        f"--observations 2 --seeds 0 --num-c2st-samples 200 --max-epochs 2 --out {out}\n"
    ) in (out / "summary.md").read_text()
    (out / "summary.md").unlink()
    assert main([*argv, "--summarise"]) == 0
    assert (out / "summary.md").exists()
    with pytest.raises(SystemExit):  # the finished unit was scored on observation 2 only
        main([*argv, "--observations", "3"])
    assert "observations [3] were asked for" in capsys.readouterr().err

    # A fresh checkout has benchmark.csv (kept in git), not rows/: the finished unit is
    # rebuilt from it, and read back, not trained again (its rows are the same).
    kept = load_rows(out)
    shutil.rmtree(out / "rows")
    assert main(argv) == 0 and "two_moons_200_0_npe: C2ST" not in capsys.readouterr().out
    assert _same(load_rows(out), kept)

    # --also joins another folder's finished units; a unit in --out wins over its copy.
    other = tmp_path / "other"
    (other / "rows").mkdir(parents=True)
    text = (out / "rows" / "two_moons_200_0_npe.csv").read_text()
    (other / "rows" / "two_moons_200_0_npe.csv").write_text(text)  # the same unit
    (other / "rows" / "two_moons_200_1_npe.csv").write_text(text.replace(",200,0,", ",200,1,"))
    assert main([*argv, "--summarise", "--also", str(other)]) == 0
    summary = (out / "summary.md").read_text()
    assert f"--out {out} --also {other} --summarise\n" in summary
    assert "| two_moons | dev | 200 | " in summary
    # Seed 0's copy in --also is dropped: 2 rows (seeds 0 and 1, observation 2), not 3.
    (line,) = [
        ln for ln in summary.splitlines() if ln.startswith("| two_moons | 200 | dev | npe |")
    ]
    assert line.split(" | ")[6] == "2"  # n, after the support and C2ST columns
    with pytest.raises(SystemExit):
        main([*argv, "--summarise", "--also", str(tmp_path / "missing")])
    assert "is not a folder of finished units" in capsys.readouterr().err
    fresh = tmp_path / "fresh"  # without --summarise the check comes before any training
    with pytest.raises(SystemExit):
        main([*argv[:-1], str(fresh), "--also", str(tmp_path / "missing")])
    assert not fresh.exists()
    with pytest.raises(SystemExit):
        main(["benchmark", "--objectives", "npe,bogus", "--out", str(out)])
    assert "unknown ['bogus']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--backend", "dask"])  # no dask.distributed client is running
    assert "needs a running dask.distributed.Client" in capsys.readouterr().err


def test_options_reach_the_flow_of_every_jsbi_method_and_the_step_of_adaptive_ones():
    import jsbi
    from jsbi.benchmark import _train

    task = jsbi.get_task("two_moons")
    theta, x = jsbi.simulate(task, 200, seed=0, show_progress_bar=False)
    options = {"num_transforms": 1, "z_score_theta": "local", "warmup_epochs": 0}
    options["passes"] = 2  # a zuko option: the flow's too, not the step's
    npe, _, _ = _train("npe", task, theta, x, 0, 1, options, None)
    assert npe.flow.config["num_transforms"] == 1
    assert npe.flow.config["z_score_theta"] == "local"
    assert npe.flow.config["flow_kwargs"] == {"passes": 2}
    jeff, _, _ = _train("jeffreys-joint", task, theta, x, 0, 1, options, None)
    assert jeff.flow.config["num_transforms"] == 1
    assert jeff.flow.config["flow_kwargs"] == {"passes": 2}
    # warmup_epochs=0 reached the step: epoch 1 already trains the reverse term (during
    # a warm-up epoch train_R is NaN).
    assert math.isfinite(jeff.history["train_R"][0])


def test_an_embedding_option_gives_every_method_the_same_fresh_embedding():
    import torch

    import jsbi
    from jsbi.benchmark import _train, unit_embedding
    from jsbi.flows import MLPEmbedding

    task = jsbi.get_task("slcp_distractors")  # 100-D x
    theta, x = jsbi.simulate(task, 200, seed=0, show_progress_bar=False)
    options = {"embedding": "mlp", "num_transforms": 1}
    first, again = unit_embedding("mlp", 100, seed=0), unit_embedding("mlp", 100, seed=0)
    for a, b in zip(first.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # the unit's seed: the same for every method
    jeff, _, _ = _train("jeffreys-summary", task, theta, x, 0, 1, options, None)
    assert isinstance(jeff.flow.embedding_net, MLPEmbedding)
    assert jeff.proxy.dim_u == 20 and jeff.proxy.summary.__self__ is jeff.flow
    sbi, _, _ = _train("sbi-npe", task, theta, x, 0, 1, options, None)
    embedded = [m for m in sbi.posterior_estimator.modules() if isinstance(m, MLPEmbedding)]
    assert len(embedded) == 1  # sbi's NPE reads x through the same kind of embedding
    with pytest.raises(ValueError, match="embedding must be one of"):
        unit_embedding("cnn", 100, seed=0)


def _c2st_row(method, obs, c2st, task="two_moons", seed=0):
    # One scored unit as the harness writes it, at 1,000 simulations.
    return dict(
        task=task,
        num_simulations=1000,
        seed=seed,
        method=method,
        observation=obs,
        c2st=c2st,
        train_seconds=1.0,
        epochs=1,
        seconds_per_epoch=1.0,
    )


def test_comparison_table_puts_methods_side_by_side_with_their_paired_difference():
    rows = [_c2st_row("npe", 1, 0.7), _c2st_row("npe", 2, 0.9), _c2st_row("npe", 3, 0.8)]
    # sbi's NPE leaves observation 3 unscored.
    rows += [_c2st_row("sbi-npe", 1, 0.6), _c2st_row("sbi-npe", 2, 0.6)]
    rows += [_c2st_row("npe", 7, 0.55)]  # a held-out observation of a development task
    rows += [_c2st_row("npe", 1, 0.8, task="sir")]
    table = comparison_table(rows, methods=("npe", "sbi-npe"), differences=[("npe", "sbi-npe")])
    lines = table.splitlines()
    assert lines[0] == "| task | set | sims | npe | sbi-npe | n | npe − sbi-npe (paired) |"
    # npe 0.8 ± 0.1 over 3; the paired differences are 0.1 and 0.3 (observations 1, 2)
    assert (
        "| two_moons | dev | 1000 | 0.800 ± 0.100 | 0.600 ± 0.000 | 2 | +0.200 ± 0.141 |" in lines
    )
    assert "| two_moons | held-out | 1000 | 0.550 ± 0.000 | - | 1 | - |" in lines
    assert "| sir | held-out | 1000 | 0.800 ± 0.000 | - | 1 | - |" in lines
    assert len(lines) == 5


def test_comparison_table_gives_one_paired_column_per_difference():
    rows = [_c2st_row("jeffreys", 1, 0.6), _c2st_row("jeffreys", 2, 0.7)]
    rows += [_c2st_row("npe", 1, 0.7), _c2st_row("npe", 2, 0.7)]
    rows += [_c2st_row("sbi-npe", 1, 0.5), _c2st_row("sbi-npe", 2, 0.5)]
    pairs = [("jeffreys", "sbi-npe"), ("jeffreys", "npe")]
    lines = comparison_table(rows, methods=("npe", "jeffreys", "sbi-npe"), differences=pairs)
    lines = lines.splitlines()
    assert lines[0].endswith("| n | jeffreys − sbi-npe (paired) | jeffreys − npe (paired) |")
    assert lines[1].count("---") == 3 + 3 + 1 + 2
    # jeffreys - sbi: 0.1 and 0.2; jeffreys - npe: -0.1 and 0.0.
    assert lines[2].endswith("| 2 | +0.150 ± 0.071 | -0.050 ± 0.071 |")
    with pytest.raises(ValueError, match="differences"):
        comparison_table(rows, differences=[])


def test_the_paired_column_compares_what_the_rows_hold():
    from jsbi.benchmark import _table_methods

    def rows(*methods):
        return [{"method": m} for m in methods]

    assert _table_methods(rows("npe", "jeffreys", "sbi-npe"))[1] == (
        ("jeffreys", "sbi-npe"),
        ("jeffreys", "npe"),
    )
    # No npe to compare with: only the difference to sbi's NPE.
    assert _table_methods(rows("jeffreys", "sbi-npe"))[1] == (("jeffreys", "sbi-npe"),)
    # Without the default: jsbi's npe against sbi's.
    assert _table_methods(rows("npe", "sbi-npe")) == (("npe", "sbi-npe"), (("npe", "sbi-npe"),))


def test_a_failing_unit_does_not_stop_the_grid(tmp_path, monkeypatch, capsys):
    import jsbi.benchmark as bench

    real = bench.run_unit

    def run_unit(task, n, seed, method, **kwargs):
        if method == "sbi-npe":
            raise RuntimeError("the sampler gave up")
        return real(task, n, seed, method, **kwargs)

    monkeypatch.setattr(bench, "run_unit", run_unit)
    # sbi-npe raises; npe still runs, and its rows come with the error.
    with pytest.raises(bench.UnitsFailedError, match="two_moons_200_0_sbi-npe: RuntimeError") as e:
        run_benchmark(["two_moons"], [200], ["sbi-npe", "npe"], out=tmp_path, **TINY)
    assert {r["method"] for r in e.value.rows} == {"npe"} and len(e.value.failures) == 1
    assert (tmp_path / "rows" / "two_moons_200_0_npe.csv").exists()
    # The CLI summarises the finished units, names the failure and exits with 1.
    argv = ["benchmark", "--tasks", "two_moons", "--num-simulations", "200"]
    argv += ["--objectives", "sbi-npe,npe", "--observations", "1,6"]
    argv += ["--num-c2st-samples", "200", "--max-epochs", "2", "--out", str(tmp_path)]
    capsys.readouterr()
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "| two_moons | 200 | dev | npe |" in captured.out
    assert "1 unit(s) failed" in captured.err and "the sampler gave up" in captured.err


def test_a_proxy_unit_s_rows_say_how_its_chains_mixed():
    from jsbi.benchmark import _score
    from tests.diagnostics.analytic import GaussianPosterior, GaussianTask
    from tests.diagnostics.test_report import _proxy_posterior

    proxy = _proxy_posterior(10)
    proxy.mcmc_max_steps = 40  # rounds of 10 while the population drifts
    row = _score(proxy, GaussianTask(), 1, 500, seed=0)
    assert 10 <= row["mcmc_steps"] <= 40 and row["mcmc_steps"] % 10 == 0
    assert 0 < row["imh_acceptance"] <= 1 and math.isfinite(row["drift"])
    flat = _score(GaussianPosterior(), GaussianTask(), 1, 500, seed=0)
    assert math.isnan(flat["mcmc_steps"]) and math.isnan(flat["drift"])


def test_a_unit_s_rows_give_the_temperature_it_kept_and_the_validation_gaps():
    from jsbi.benchmark import code_version, run_unit
    from jsbi.posteriors.posterior import _TEMPERATURES

    kw = dict(observations=[1], num_samples=200, max_epochs=2, calibration_pairs=0)
    (row,) = run_unit("two_moons", 200, 0, "npe-recalibrated", **kw)
    assert any(abs(row["temperature"] - t) < 1e-6 for t in _TEMPERATURES), row["temperature"]
    (plain,) = run_unit("two_moons", 200, 0, "npe", **kw)
    assert math.isnan(plain["temperature"])
    assert row["code"] == plain["code"] == code_version()
    # npe has no proxy to measure; jeffreys' rows give the last validation measurement.
    assert math.isnan(plain["validation_mixture_minus_flow"])
    (jeff,) = run_unit("two_moons", 200, 0, "jeffreys", **kw)
    gap, mix = jeff["validation_proxy_minus_flow"], jeff["validation_mixture_minus_flow"]
    assert jeff["validation_mixture_minus_flow_se"] > 0 and mix < min(0.0, gap) + math.log(2)


def test_the_code_version_names_the_checkout_s_commit(monkeypatch):
    import subprocess

    import jsbi
    from jsbi.benchmark import code_version

    version = code_version()
    try:  # where git cannot read the checkout (no git, not a clone), the fallback below
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        git = None
    if git is not None and git.returncode == 0:
        head = git.stdout.strip()
        assert version in (head, head + "+changes"), version
    else:
        assert version == f"jsbi {jsbi.__version__}"

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert code_version() == version  # read once per process
    code_version.cache_clear()
    try:
        assert code_version() == f"jsbi {jsbi.__version__}"
    finally:
        code_version.cache_clear()


def _same(a, b):
    # Rows equal value by value (NaN equal to NaN).
    def norm(rows):
        return [{k: "nan" if v != v else v for k, v in r.items()} for r in rows]

    return norm(a) == norm(b)
