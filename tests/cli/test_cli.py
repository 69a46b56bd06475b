from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from jsbi.cli import main
from jsbi.posteriors.io import load_posterior


def test_run_two_moons_tiny(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--task", "two_moons", "--num-simulations", "200", "--max-epochs", "3"]
    argv += ["--num-samples", "50", "--out", str(out), "--quiet", "--observation", "2"]
    assert main(argv) == 0
    samples = torch.load(out / "samples.pt")
    assert samples.shape == (50, 2)
    # two_moons' prior is the box [-1, 1]^2 and the flow is bounded.
    assert samples.abs().max() <= 1
    with open(out / "samples.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["theta_1", "theta_2"] and len(rows) == 51
    history = json.loads((out / "history.json").read_text())
    assert (
        history["epochs_trained"] == 3 and history["num_train"] + history["num_validation"] == 200
    )
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "two_moons" and run["observation"] == 2
    posterior = load_posterior(out / "posterior.pt")
    assert torch.isfinite(posterior.log_prob(samples)).all()  # default_x was saved


def test_run_adaptive_options_reach_the_trainer(tmp_path):
    out = tmp_path / "srfe"
    argv = ["run", "--task", "two_moons", "--num-simulations", "200", "--max-epochs", "3"]
    argv += ["--num-samples", "20", "--out", str(out), "--quiet", "--objective", "srfe"]
    argv += ["--tau", "0.3", "--warmup-epochs", "1", "--no-adaptive", "--num-proxy-samples", "4"]
    argv += ["--schedule", "joint", "--proxy", "ratio"]
    assert main(argv) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["epochs_trained"] == 3
    # After the warm-up epoch the reverse term is on, at the given tau, with a fixed lambda.
    taus = [t for t in history["train_tau"] if not math.isnan(t)]
    assert taus and all(t == pytest.approx(0.3) for t in taus)
    lams = [v for v in history["train_lambda"] if not math.isnan(v)]
    assert lams and max(lams) == min(lams)
    run = json.loads((out / "run.json").read_text())
    # run.json records the configs whole.
    method = run["configs"]["method"]
    assert run["objective"] == "srfe" and method["tau"] == 0.3 and method["adaptive"] is False
    assert run["configs"]["train"]["max_epochs"] == 3
    assert torch.load(out / "samples.pt").abs().max() <= 1


def test_run_posterior_proxy_returns_and_saves_the_proxy(tmp_path):
    from jsbi.posteriors.proxy import ProxyPosterior

    out = tmp_path / "proxy"
    argv = ["run", "--task", "two_moons", "--num-simulations", "200", "--max-epochs", "2"]
    argv += ["--num-samples", "30", "--out", str(out), "--quiet", "--objective", "jeffreys"]
    assert main([*argv, "--posterior", "proxy"]) == 0
    assert json.loads((out / "history.json").read_text())["posterior"] == "proxy"
    posterior = load_posterior(out / "posterior.pt")
    assert isinstance(posterior, ProxyPosterior)
    samples = torch.load(out / "samples.pt")
    assert samples.shape == (30, 2) and samples.abs().max() <= 1
    # run.json says how the samples' chains mixed (30 chains: R-hat from their last steps).
    run = json.loads((out / "run.json").read_text())
    assert posterior.mcmc_max_steps is None  # the default (no rounds), saved and loaded
    assert run["mcmc_mixing"]["num_steps"] == posterior.mcmc_steps
    assert 0 < run["mcmc_mixing"]["imh_acceptance"] <= 1 and isinstance(run["mcmc_mixed"], bool)


def test_every_adaptive_option_has_a_flag_that_reaches_the_estimator():
    import dataclasses

    import jsbi
    from jsbi.cli import build_parser
    from jsbi.cli.flags import given as given_flags
    from jsbi.estimator import PosteriorEstimator
    from jsbi.methods.config import SymmetricConfig

    parser = build_parser()
    flags = {a.dest for a in parser._subparsers._group_actions[0].choices["run"]._actions}
    fields = {f.name for f in dataclasses.fields(SymmetricConfig)} - {"objective"}
    assert fields <= flags
    argv = ["run", "--task", "two_moons", "--objective", "jeffreys", "--gate-samples", "16"]
    argv += ["--proxy-every", "2", "--phase2-patience", "3", "--no-gate", "--path-gradient"]
    argv += ["--num-proxy-samples", "2"]
    kwargs = given_flags(parser.parse_args(argv), SymmetricConfig)
    est = PosteriorEstimator(jsbi.get_task("two_moons").prior, objective="jeffreys", **kwargs)
    given = {"gate_samples": 16, "proxy_every": 2, "phase2_patience": 3, "gate": False}
    given.update(path_gradient=True, num_proxy_samples=2)
    assert {k: getattr(est.method, k) for k in given} == given
    # Left out, a flag is not passed: the estimator's default holds.
    kwargs = given_flags(parser.parse_args(["run", "--task", "two_moons"]), SymmetricConfig)
    assert kwargs == {}


def test_every_flow_option_has_the_same_flag_on_run_report_and_demo(tmp_path):
    import dataclasses

    from jsbi.cli import build_parser
    from jsbi.cli.flags import given
    from jsbi.flows.config import FlowConfig

    def _flow_kwargs(args):
        return given(args, FlowConfig)

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    fields = {f.name for f in dataclasses.fields(FlowConfig)}
    for command in ("run", "report", "demo"):
        assert fields <= {a.dest for a in commands[command]._actions}, command
    argv = ["report", "--task", "two_moons", "--hidden-features", "32,32", "--passes", "2"]
    argv += ["--z-score-x", "robust", "--z-score-theta", "false", "--support", "transform"]
    chosen = _flow_kwargs(parser.parse_args(argv))
    assert chosen == {
        "hidden_features": (32, 32),
        "passes": 2,
        "z_score_x": "robust",
        "z_score_theta": False,
        "support": "transform",
    }
    assert _flow_kwargs(parser.parse_args(["demo"])) == {}
    # A run with them trains that flow, and run.json says which.
    out = tmp_path / "coupling"
    argv = ["run", "--task", "two_moons", "--num-simulations", "200", "--max-epochs", "1"]
    argv += ["--num-samples", "10", "--out", str(out), "--quiet", "--passes", "2"]
    assert main([*argv, "--num-transforms", "3", "--hidden-features", "16"]) == 0
    flow = load_posterior(out / "posterior.pt").flow
    assert flow.config["flow_kwargs"] == {"passes": 2}
    assert flow.config["num_transforms"] == 3
    run = json.loads((out / "run.json").read_text())
    flow = run["configs"]["flow"]
    assert flow["flow"] == "nsf" and flow["passes"] == 2 and flow["hidden_features"] == 16


def _fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_run_errors(tmp_path, capsys):
    run = ["run", "--task", "two_moons", "--out", str(tmp_path)]
    err = _fails([*run, "--eps", "0.1", "--warmup-epochs", "2"], capsys)
    assert "--eps, --warmup-epochs apply to the symmetric methods" in err
    assert "Traceback" not in err
    err = _fails([*run, "--posterior", "auto"], capsys)
    assert "--posterior apply to the symmetric methods" in err
    assert "invalid choice: 'best'" in _fails([*run, "--posterior", "best"], capsys)
    assert "tau and tau_schedule apply to objective='srfe'" in _fails(
        [*run, "--objective", "jeffreys", "--tau", "0.5"], capsys
    )
    assert "invalid choice: 'kl'" in _fails([*run, "--objective", "kl"], capsys)
    assert "--flow: invalid choice: 'nope'" in _fails([*run, "--flow", "nope"], capsys)
    # The flow's flags (FlowConfig's fields), checked before anything is simulated.
    for flag, value, expected in (
        ("--num-transforms", "0", "num_transforms must be an int >= 1"),
        ("--hidden-features", "50,x", "expected comma-separated ints"),
        ("--passes", "0", "passes must be an int >= 1"),
        ("--z-score-x", "sometimes", "z_score_x must be one of True, False, 'robust'"),
    ):
        assert expected in _fails([*run, flag, value], capsys), flag
    assert "invalid choice" in _fails(["run", "--task", "no_such_task", "--out", "x"], capsys)
    assert "anneal" in _fails([*run, "--objective", "srfe", "--tau-schedule", "x"], capsys)
    # Numeric options are checked before anything is simulated, naming the flag.
    for flag, value, expected in (
        ("--num-samples", "-1", ">= 1"),
        ("--num-simulations", "0", ">= 1"),
        ("--learning-rate", "inf", "> 0"),
        ("--batch-size", "two", "expected an int"),
        ("--max-epochs", "0", ">= 1"),
    ):
        err = _fails([*run, flag, value], capsys)
        assert f"argument {flag}: " in err and expected in err, err
    for flag, value, expected in (
        ("--gate-samples", "1", "gate_samples must be an int >= 2"),
        ("--phase2-patience", "0", "phase2_patience must be an int >= 1"),
        ("--proxy-every", "two", "expected an int"),
    ):
        err = _fails([*run, "--objective", "jeffreys", flag, value], capsys)
        assert f"argument {flag}: " in err and expected in err, err
    err = _fails([*run, "--objective", "jeffreys", "--schedule", "joint", "--alpha", "-1"], capsys)
    assert "alpha must be > 0" in err
    err = _fails([*run, "--objective", "srfe", "--tau", "1.5"], capsys)
    assert "argument --tau: tau must be in (0, 1)" in err
    assert "CUDA is not available" in _fails([*run, "--device", "cuda"], capsys) or (
        torch.cuda.is_available()
    )
    assert not any(tmp_path.iterdir())  # nothing simulated or written
    a_file = tmp_path / "file"
    a_file.write_text("")
    err = _fails(["run", "--task", "two_moons", "--out", str(a_file)], capsys)
    assert "argument --out" in err and "is not a folder" in err


def test_report_tiny(tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["report", "--task", "two_moons", "--num-simulations", "200", "--max-epochs", "2"]
    argv += ["--objectives", "npe,sbi-npe", "--out", str(out), "--observations", "1"]
    argv += ["--num-sbc", "20", "--num-posterior-samples", "30", "--num-c2st-samples", "100"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out / "index.html") in printed
    assert "jsbi-npe" in printed and "sbi-npe" in printed and "C2ST (random forest)" in printed
    assert (out / "index.html").stat().st_size > 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    c2st = {r["method"]: float(r["value"]) for r in rows if r["metric"] == "c2st"}
    assert set(c2st) == {"jsbi-npe", "sbi-npe"}
    assert all(0 <= v <= 1 for v in c2st.values())
    epochs = {r["method"]: r["value"] for r in rows if r["metric"] == "epochs_trained"}
    assert epochs["jsbi-npe"] == "2"
    for name in ("coverage.png", "tarp.png", "sbc_ecdf.png", "pairplot_obs1.png", "samples.nc"):
        assert (out / name).exists(), name


def test_report_says_what_each_symmetric_method_returned(tmp_path):
    from jsbi.pipeline import run_report

    report = run_report(
        "two_moons",
        200,
        ("jeffreys", "npe"),
        out=tmp_path / "r",
        max_epochs=2,
        observations=(1,),
        num_sbc=10,
        num_posterior_samples=20,
        num_c2st_samples=100,
        method_options={"jeffreys": {"posterior": "proxy"}},
    )
    assert report.settings["returned"] == {"jsbi-jeffreys": "proxy", "jsbi-npe": "flow"}
    page = (tmp_path / "r" / "index.html").read_text()
    assert "returned = {&#x27;jsbi-jeffreys&#x27;: &#x27;proxy&#x27;" in page
    # The method table says it too, in the printed summary and on the page.
    lines = {line.split()[0]: line.split()[1] for line in report.summary().splitlines()[2:4]}
    assert lines == {"jsbi-jeffreys": "proxy", "jsbi-npe": "flow"}
    assert "jsbi-jeffreys</td><td>proxy</td>" in page
    assert any("jsbi-jeffreys returns its likelihood proxy" in v for v in report.verdict())


def test_methods_side_by_side_give_the_report_of_one_process(tmp_path):
    from jsbi.pipeline import run_report

    def report(method_jobs):
        return run_report(
            "two_moons",
            200,
            ("jeffreys", "npe", "sbi-npe"),
            out=tmp_path / str(method_jobs),
            max_epochs=2,
            observations=(1,),
            num_sbc=10,
            num_posterior_samples=20,
            num_c2st_samples=100,
            method_jobs=method_jobs,
        )

    # The workers' warnings reach the caller (sbi's epoch cap among them).
    with pytest.warns(UserWarning, match="training hit the epoch cap"):
        side_by_side = report(2)
    alone = report(1)
    # Every method seeds its own training and diagnostics (sbi NPE's NLTP, which draws
    # for its normalisation, too): the same epochs and the same report.
    for name, h in alone.histories.items():
        assert side_by_side.histories[name]["validation_loss"] == h["validation_loss"]
        assert side_by_side.methods[name].rows(name) == alone.methods[name].rows(name)
    with pytest.raises(ValueError, match="method_jobs must be a nonzero int"):
        run_report("two_moons", 10, ("npe",), method_jobs=0)


def test_report_errors(tmp_path, capsys):
    rep = ["report", "--task", "two_moons", "--out", str(tmp_path)]
    assert "--objectives must be" in _fails([*rep, "--objectives", "npe,bogus"], capsys)
    assert "--observations must lie in 1..10" in _fails([*rep, "--observations", "0,11"], capsys)
    assert "comma-separated integers" in _fails([*rep, "--observations", "a"], capsys)
    err = _fails([*rep, "--method-jobs", "0"], capsys)
    assert "--method-jobs: expected -1 or an int >= 1" in err
    assert "argument --num-sbc: expected a finite int >= 1" in _fails(
        [*rep, "--num-sbc", "0"], capsys
    )
    # The symmetric objectives' flags need a method they reach.
    err = _fails([*rep, "--objectives", "npe,sbi-npe", "--gate-samples", "16"], capsys)
    assert "--gate-samples apply to the symmetric methods" in err and "has none" in err
    err = _fails([*rep, "--objectives", "jeffreys,npe", "--tau", "0.3"], capsys)
    assert "--tau and --tau-schedule apply to srfe" in err
    err = _fails([*rep, "--gate-samples", "1"], capsys)
    assert "argument --gate-samples: gate_samples must be an int >= 2" in err
    err = _fails(["demo", "--out", str(tmp_path / "d"), "--proxy", "nope"], capsys)
    assert "argument --proxy: invalid choice: 'nope'" in err


def test_report_flags_reach_the_symmetric_methods_only():
    import jsbi
    from jsbi.cli import build_parser
    from jsbi.cli.report import method_options as _method_options
    from jsbi.estimator import PosteriorEstimator

    parser = build_parser()
    argv = ["report", "--task", "two_moons", "--objectives", "jeffreys,srfe,npe,sbi-npe"]
    flags = ["--tau", "0.3", "--gate-samples", "16", "--proxy", "ratio", "--posterior", "auto"]
    args = parser.parse_args([*argv, *flags])
    args._parser = parser
    options = _method_options(args, args.objectives.split(","))
    assert sorted(options) == ["jeffreys", "srfe"]
    assert "tau" not in options["jeffreys"] and options["srfe"]["tau"] == 0.3
    prior = jsbi.get_task("two_moons").prior
    for method, kwargs in options.items():
        est = PosteriorEstimator(prior, objective=method, **kwargs)
        assert est.method.proxy == "ratio", method
        assert est.method.gate_samples == 16, method
        assert est.method.returns == "auto", method
    args = parser.parse_args(argv)
    args._parser = parser
    assert _method_options(args, args.objectives.split(",")) == {}


def test_run_report_checks_method_options_before_simulating(monkeypatch):
    import jsbi.pipeline
    from jsbi.pipeline import run_report

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated before the options were checked")

    monkeypatch.setattr(jsbi.pipeline, "simulate", no_simulation)
    with pytest.raises(ValueError, match="method_options must name jsbi methods"):
        run_report("two_moons", 10, ("npe", "sbi-npe"), method_options={"sbi-npe": {}})
    with pytest.raises(ValueError, match="method_options must name jsbi methods"):
        run_report("two_moons", 10, ("npe",), method_options={"jeffreys": {}})
    with pytest.raises(ValueError, match="proxy"):
        run_report("two_moons", 10, ("jeffreys",), method_options={"jeffreys": {"proxy": "x"}})


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and all(c in out for c in ("run", "report", "demo"))
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--out" in out and "demo-out" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    # What a scientist needs; the methods' internals under --help-all.
    for flag in ("--task", "--objective", "--tau", "--proxy", "--max-epochs", "--help-all"):
        assert flag in out
    for flag in ("--eps", "--alpha", "--dual-lr", "--num-proxy-samples", "--warmup-epochs"):
        assert flag not in out
    with pytest.raises(SystemExit):
        main(["run", "--help-all"])
    out = capsys.readouterr().out
    for flag in ("--tau-schedule", "--eps", "--alpha", "--dual-lr", "--num-proxy-samples"):
        assert flag in out


def test_version(capsys):
    import jsbi

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"jsbi {jsbi.__version__}\n"


def test_every_training_command_takes_the_same_flags(tmp_path, capsys):
    from jsbi.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("run", "report", "demo", "benchmark"):
        actions = {o: a for a in sub.choices[name]._actions for o in a.option_strings}
        assert {"--threads", "--device", "--out"} <= set(actions), name
        assert not actions["--out"].required and actions["--out"].default is not None, name
    # The training options come from TrainConfig's fields: the same flags wherever a
    # command trains with chosen options; the benchmark keeps the defaults but the cap.
    train = {"--learning-rate", "--batch-size", "--validation-fraction"}
    train |= {"--stop-after-epochs", "--max-epochs", "--clip-max-norm"}
    for name in ("run", "report", "demo"):
        flags = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert train <= flags, name
    assert "--max-epochs" in {
        o for a in sub.choices["benchmark"]._actions for o in a.option_strings
    }
    # The symmetric objectives' options from SymmetricConfig's fields, wherever one trains.
    symmetric = {"--proxy", "--posterior", "--tau", "--gate-samples", "--no-gate"}
    symmetric |= {"--num-proxy-samples"}
    for name in ("run", "report", "demo"):
        flags = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert symmetric <= flags, name
    # C2ST samples have one name in report, demo and benchmark.
    for name in ("report", "demo", "benchmark"):
        flags = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert "--num-c2st-samples" in flags, name
    argv = ["run", "--task", "two_moons", "--out", str(tmp_path / "r"), "--threads", "0"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "argument --threads: expected a finite int >= 1" in (
        capsys.readouterr().err
    )
    # An unavailable device is a usage error before anything is simulated.
    for name in ("run", "report", "demo", "benchmark"):
        argv = [name, "--out", str(tmp_path / name), "--device", "cuda"]
        argv += ["--task", "two_moons"] if name in ("run", "report") else []
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and "--device cuda: CUDA is not available" in (
            capsys.readouterr().err
        ), name
    assert not any((tmp_path / name).exists() for name in ("report", "demo", "benchmark"))


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    import jsbi

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("training interrupted at epoch 1")

    monkeypatch.setattr(jsbi, "simulate", interrupted)
    argv = ["run", "--task", "two_moons", "--num-simulations", "50", "--out", str(tmp_path)]
    assert main([*argv, "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "jsbi run: interrupted: training interrupted at epoch 1" in err
    assert "Traceback" not in err


def test_a_failed_run_marks_its_output_and_removes_an_older_runs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["run", "--task", "two_moons", "--num-simulations", "100", "--max-epochs", "1"]
    argv += ["--num-samples", "5", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert (out / "samples.pt").exists()

    import jsbi.posteriors.posterior

    def broken(*args, **kwargs):
        raise RuntimeError("sampling broke")

    monkeypatch.setattr(jsbi.posteriors.posterior.Posterior, "sample", broken)
    with pytest.raises(RuntimeError, match="sampling broke"):
        main(argv)
    run = json.loads((out / "run.json").read_text())
    # The new posterior is saved; the old run's samples are gone, and run.json says why.
    assert run["status"].startswith("failed (RuntimeError): sampling (posterior.pt")
    assert run["error"] == "sampling broke"
    assert (out / "posterior.pt").exists() and not (out / "samples.pt").exists()


MODEL = """
import torch
from torch.distributions import Independent, Normal
prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
def simulate(theta):
    return theta + 0.3 * torch.randn_like(theta)
"""


def test_run_takes_your_own_simulator_and_prior(tmp_path, capsys):
    model = tmp_path / "model.py"
    model.write_text(MODEL)
    out = tmp_path / "out"
    own = ["run", "--simulator", f"{model}:simulate", "--out", str(out)]
    args = [*own, "--prior", f"{model}:prior", "--observed", "0.3,1.2"]
    assert (
        main([*args, "--num-simulations", "300", "--max-epochs", "2", "--num-samples", "20"]) == 0
    )
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and 0 < run["observation_p_value"] <= 1
    assert run["observation_atypical"] is False
    with open(out / "samples.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["theta_1", "theta_2"] and len(rows) == 21
    # What is missing or wrong is named before anything is simulated.
    assert "--simulator needs --observed" in _fails([*own, "--prior", f"{model}:prior"], capsys)
    assert "give its --prior too" in _fails([*own, "--observed", "1,2"], capsys)
    assert "has no 'nope'" in _fails(
        [*args[:-4], "--prior", f"{model}:nope", "--observed", "1"], capsys
    )
    assert "comma-separated numbers" in _fails([*args[:-1], "a,b"], capsys)
    assert "give --task or --simulator, not both" in _fails([*args, "--task", "two_moons"], capsys)
