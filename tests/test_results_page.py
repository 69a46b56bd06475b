"""The results page's arithmetic: paired differences, shares, and the time-to-accuracy
front, on rows whose answers are known."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page():
    return _load("results_page")


@pytest.fixture(scope="module")
def front():
    return _load("time_to_accuracy")


def _row(method, obs, seed, c2st):
    return {"method": method, "observation": str(obs), "seed": str(seed), "c2st": str(c2st)}


def test_the_paired_difference_and_its_standard_error(page):
    # jeffreys beats sbi-npe by 0.02, 0.04, 0.06 and 0.08 on the four (obs, seed) pairs.
    rows = []
    for k, (obs, seed) in enumerate([(1, 0), (2, 0), (1, 1), (2, 1)]):
        rows += [_row("sbi-npe", obs, seed, 0.7), _row("jeffreys", obs, seed, 0.68 - 0.02 * k)]
    se = 0.02 * math.sqrt(5 / 3) / 2  # sd of (0.02, 0.04, 0.06, 0.08) over sqrt(4)
    assert page.paired(rows, "jeffreys") == f"{-0.05:+.3f} ± {se:.3f}"
    assert page.paired(rows, "sbi-npe") == "-"
    assert page.mean_sd([0.5, 0.7]) == "0.600 ± 0.141"
    assert page.share(["True", "False", "True", ""]) == "2/3"


def test_the_front_is_the_best_c2st_within_each_time(front):
    rows = []
    # npe: fast and 0.8 at 1k, 0.7 at 10k; jeffreys: slower, 0.75 and 0.6.
    for method, n, sim, train, c in [
        ("npe", 1000, 1.0, 10.0, 0.8),
        ("npe", 10000, 10.0, 100.0, 0.7),
        ("jeffreys", 1000, 1.0, 30.0, 0.75),
        ("jeffreys", 10000, 10.0, 300.0, 0.6),
    ]:
        rows.append(
            {
                "task": "t",
                "method": method,
                "num_simulations": n,
                "seed": 0,
                "simulation_seconds": sim,
                "train_seconds": train,
                "sample_seconds": 0.0,
                "c2st": c,
            }
        )
    pts = front.points(rows, 0.0)
    assert front.front(pts["t", "npe"], 50.0) == 0.8
    assert math.isinf(front.front(pts["t", "jeffreys"], 20.0))
    lead = {r["seconds"]: r["leader"] for r in front.leaders(rows, 0.0)}
    assert lead[11.0] == "npe" and lead[31.0] == "jeffreys" and lead[310.0] == "jeffreys"
    # At 110 s npe (0.7) leads jeffreys' 0.75 by more than 0.01: no domination; from
    # jeffreys' 10k point (310 s) on it leads: the crossing point.
    verdict = "t: trails by 0.050 at 110 s, within 0.01 from 310 s on"
    assert front.dominance(rows, 0.0, "jeffreys", "npe") == verdict
    # npe against jeffreys trails from 31 s to the end: no crossing within the grid.
    verdict = "t: trails by 0.100 at 310 s, still at its last time (310 s)"
    assert front.dominance(rows, 0.0, "npe", "jeffreys") == verdict
    # A simulation cost of 1 s per call: 1k pairs cost 1,000 s more for both.
    assert front.points(rows, 1.0)["t", "npe"][0][0] == pytest.approx(1011.0)


def test_the_front_lists_each_units_c2st_and_times(front):
    unit = {"task": "t", "method": "npe", "num_simulations": 500, "seed": 0}
    times = {"simulation_seconds": 0.25, "train_seconds": 12.0, "sample_seconds": 0.125}
    rows = [
        {**unit, **times, "observation": 1, "c2st": 0.6, "epochs": 40, "code": "abc1234"},
        {**unit, **times, "observation": 2, "c2st": 0.8, "epochs": 40, "code": "abc1234"},
    ]
    head, rule, line = front.unit_table(rows)
    assert head.startswith("| task | N | seed | method |") and rule.count("|") == head.count("|")
    # C2ST: the mean and sd over the unit's observations; the unit's times once.
    assert line == "| t | 500 | 0 | npe | - | 0.700 ± 0.141 | 0.2 | 12.0 | 0.12 | 40 | abc1234 |"


def test_the_cost_table_gives_the_defaults_training_time_over_npes(front):
    def unit(method, n, train, **more):
        return {
            "task": "t",
            "method": method,
            "num_simulations": n,
            "seed": 0,
            "train_seconds": train,
            "observation": 1,
            **more,
        }

    rows = [
        unit("npe", 1000, 10.0),
        unit("jeffreys", 1000, 25.0, returned="proxy", phase2="ran"),
        unit("npe", 2000, 20.0),
        unit("jeffreys", 2000, 24.0, returned="flow", phase2="skipped"),
        unit("npe", 5000, 50.0),  # no default unit: left out
        unit("sbi-npe", 1000, 5.0),
        # A variant of the default: its own lines, after the default's, and its own median.
        unit("jeffreys-nophase2", 1000, 15.0, returned="mixture", phase2="phase2=False"),
        unit("jeffreys-nophase2", 20000, 15.0),  # no npe unit: left out
    ]
    head, rule, *table, blank, median = front.cost_table(rows)
    assert head.startswith("| task | N | seed | method |") and rule.count("|") == head.count("|")
    assert table == [
        "| t | 1000 | 0 | jeffreys | 2.50x | proxy | ran |",
        "| t | 1000 | 0 | jeffreys-nophase2 | 1.50x | mixture | phase2=False |",
        "| t | 2000 | 0 | jeffreys | 1.20x | flow | skipped |",
    ]
    assert blank == ""
    assert median == (
        "Median: jeffreys (the default) 1.85x over 2 units; jeffreys-nophase2 1.50x over 1 unit."
    )
    assert front.cost_table([unit("npe", 1000, 10.0)]) == []


def test_the_same_budget_table_pairs_each_jsbi_method_with_sbi_npe_and_npe(front):
    def unit(method, seed, obs, c2st, n=1000):
        return {"task": "t", "method": method, "num_simulations": n, "seed": seed,
                "observation": obs, "c2st": c2st}  # fmt: skip

    rows = []
    # Two seeds x two observations: jeffreys is 0.02, 0.04, 0.06, 0.08 below sbi NPE and
    # 0.05 below npe on each pair.
    for k, (seed, obs) in enumerate([(0, 1), (0, 2), (1, 1), (1, 2)]):
        rows += [
            unit("sbi-npe", seed, obs, 0.7),
            unit("npe", seed, obs, 0.73 - 0.02 * k),
            unit("jeffreys", seed, obs, 0.68 - 0.02 * k),
        ]
    # A variant on seed 0 alone, and sbi NPE alone at another budget (no jsbi line there).
    rows += [unit("jeffreys-nophase2", 0, 1, 0.66), unit("jeffreys-nophase2", 0, 2, 0.64)]
    rows += [unit("sbi-npe", 0, 1, 0.6, n=2000)]
    head, rule, *lines = front.same_budget_table(rows)
    assert head.startswith("| task | N | method | seeds |") and rule.count("|") == head.count("|")
    se = 0.02 * math.sqrt(5 / 3) / 2  # sd of (0.02, 0.04, 0.06, 0.08) over sqrt(4)
    sd = 0.02 * math.sqrt(5 / 3)
    assert lines == [
        f"| t | 1000 | jeffreys | 2 | 0.650 ± {sd:.3f} | {-0.05:+.3f} ± {se:.3f} "
        f"| {-0.05:+.3f} ± 0.000 |",
        # 0.66 and 0.64: sd 0.014; against sbi NPE -0.04 and -0.06, against npe (0.73,
        # 0.71) -0.07 twice.
        "| t | 1000 | jeffreys-nophase2 | 1 | 0.650 ± 0.014 | -0.050 ± 0.010 | -0.070 ± 0.000 |",
    ]


def test_a_methods_point_at_a_budget_is_the_mean_over_its_seeds(front):
    # Two seeds at one budget: one point, their mean time and C2ST (the front may not pick
    # the luckier seed); each seed's C2ST is first the mean over its observations.
    base = {"task": "t", "method": "npe", "num_simulations": 1000, "sample_seconds": 0.0}
    rows = [
        {**base, "seed": 0, "simulation_seconds": 1.0, "train_seconds": 9.0, "c2st": 0.6},
        {**base, "seed": 0, "simulation_seconds": 1.0, "train_seconds": 9.0, "c2st": 0.8},
        {**base, "seed": 1, "simulation_seconds": 1.0, "train_seconds": 29.0, "c2st": 0.5},
    ]
    [(total, c2st, n)] = front.points(rows, 0.0)["t", "npe"]
    assert (total, n) == (20.0, 1000) and c2st == pytest.approx((0.7 + 0.5) / 2)
    assert front.front(front.points(rows, 0.0)["t", "npe"], 19.0) == math.inf


def test_summarise_reads_the_finished_units_and_names_the_missing(front, tmp_path, capsys):
    import argparse

    from jsbi.benchmark import write_rows

    unit = {"task": "two_moons", "num_simulations": 500, "seed": 0, "method": "npe"}
    kept = {"support": "truncate", "transforms": "autoregressive", "posterior": "flow"}
    times = {"simulation_seconds": 0.0, "train_seconds": 3.0, "sample_seconds": 0.1}
    rows = [{**unit, **kept, **times, "epochs": 9, "observation": o, "c2st": 0.7} for o in (1, 2)]
    (tmp_path / "rows").mkdir()
    write_rows(tmp_path / "rows" / "two_moons_500_0_npe.csv", rows)
    args = argparse.Namespace(
        tasks="two_moons",
        num_simulations="500",
        seeds="0",
        methods="npe,sbi-npe",
        observations="1,2",
        out=tmp_path,
        also=[],
        summarise=True,
        c2st_jobs=1,
    )
    got = front.units(args)  # trains nothing: sbi-npe has no rows and is left out
    assert [(r["method"], r["observation"], r["num_simulations"]) for r in got] == [
        ("npe", 1, 500),
        ("npe", 2, 500),
    ]
    assert "not finished (left out): two_moons_500_0_sbi-npe" in capsys.readouterr().out
    assert not (tmp_path / "rows" / "two_moons_500_0_sbi-npe.csv").exists()


def test_a_grid_table_names_the_temperature_and_the_code_of_each_unit(page, tmp_path):
    import csv

    rows = [
        {"task": "two_moons", "num_simulations": "1000", "seed": s, "observation": o}
        | {"method": m, "c2st": "0.7", "returned": "flow", "temperature": t, "code": c}
        for m, s, t, c in [
            ("npe", "0", "", ""),
            ("npe-recalibrated", "0", "1.3", "abc1234"),
            ("npe-recalibrated", "1", "0.84", "abc1234"),
            ("jeffreys", "0", "", "abc1234"),
            ("jeffreys", "1", "", "def5678+changes"),
        ]
        for o in ("1", "2")
    ]
    with open(tmp_path / "benchmark.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = page.grid_section("Grid", tmp_path, "note")
    recal = next(ln for ln in lines if ln.startswith("| npe-recalibrated |"))
    assert "| flow (T 1.30, 0.84) |" in recal
    plain = next(ln for ln in lines if ln.startswith("| npe |"))
    assert "| flow |" in plain and "(T" not in plain
    # The code column counts units (seeds), not rows (observations).
    assert recal.endswith("| abc1234 (2) |")
    assert plain.endswith("| unrecorded |")
    jeffreys = next(ln for ln in lines if ln.startswith("| jeffreys |"))
    assert jeffreys.endswith("| abc1234, def5678+changes |")


def test_the_mixture_section_groups_rows_by_the_validation_gap(page, tmp_path):
    import json

    cal = {"coverage_max_deviation": -0.1, "sbc_in_band": True, "nltp": 1.0}
    base = {"n": 1000, "code": "abc", "num_samples": 4000, "pairs": 200, "pair_samples": 100}
    base |= {f"cal_{k}": cal for k in ("flow", "proxy", "mixture")}
    rows = [
        # The proxy ahead by 2 se and returned: the mixture 0.02 above it.
        base
        | {"task": "two_moons", "seed": 0, "returned": "proxy", "val_gap": -0.2}
        | {"val_se": 0.1, "c2st_flow": [0.7] * 5, "c2st_proxy": [0.6] * 5}
        | {"c2st_mixture": [0.61, 0.62, 0.63, 0.62, 0.62]},
        # The flow returned, the gap within 1 se: the mixture 0.01 below the flow.
        base
        | {"task": "slcp", "seed": 1, "returned": "flow", "val_gap": 0.05}
        | {"val_se": 0.1, "c2st_flow": [0.8] * 5, "c2st_proxy": [0.9] * 5}
        | {"c2st_mixture": [0.79] * 5},
    ]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = "\n".join(page.mixture_section(tmp_path))
    assert (
        "| two_moons | 1000 | 0 | proxy (-2.0 se) | 0.700 | 0.600 | 0.620 | +0.020 ± 0.003 |"
        in text
    )
    assert "| slcp | 1000 | 1 | flow (+0.5 se) | 0.800 | 0.900 | 0.790 | -0.010 ± 0.000 |" in text
    assert "| proxy ahead | 1 | +0.020 | 0/1 |" in text
    assert "| within 1 se | 1 | -0.010 | 1/1 |" in text


def test_the_choice_section_gives_each_units_validation_gaps_and_paired_c2st(page, tmp_path):
    from jsbi.benchmark import write_rows

    gaps = {"validation_proxy_minus_flow": "0.1", "validation_proxy_minus_flow_se": "0.05"}
    gaps |= {"validation_mixture_minus_flow": "-0.2", "validation_mixture_minus_flow_se": "0.01"}
    common = {"task": "slcp", "num_simulations": "1000", "seed": "0", "code": "abc"}
    rows = []
    for obs, (ours, theirs) in enumerate([(0.70, 0.75), (0.80, 0.81)], start=1):
        rows.append(
            common
            | gaps
            | {
                "method": "jeffreys",
                "observation": str(obs),
                "c2st": str(ours),
                "returned": "mixture",
            }
        )
        rows.append(
            common
            | {
                "method": "sbi-npe",
                "observation": str(obs),
                "c2st": str(theirs),
                "returned": "sbi",
            }
        )
    # A unit of older code, without the columns, is left out.
    rows.append(
        common
        | {
            "seed": "1",
            "method": "jeffreys",
            "observation": "1",
            "c2st": "0.6",
            "returned": "flow",
        }
    )
    write_rows(tmp_path / "benchmark.csv", rows)  # the harness's writer: absent is empty
    text = "\n".join(page.choice_section("dev", tmp_path))
    # C2ST 0.750 ± 0.071; paired -0.05 and -0.01: mean -0.030, se 0.020.
    line = "| slcp | 1,000 | 0 | mixture | +0.100 ± 0.050 | -0.200 ± 0.010 | 0.750 ± 0.071 | "
    assert line + "-0.030 ± 0.020 | abc |" in text
    assert "| slcp | 1,000 | 1 |" not in text


def test_phase_two_keeps_its_state_only_below_phase_ones_best():
    trace = _load("phase2_trace")
    # Phase 1's best is 1.0 (epoch 2); phase 2's third epoch is the first below it, its
    # fifth lowers it again; a NaN epoch never counts.
    val = [2.0, 1.0, 1.5, 1.2, 1.1, 0.9, math.nan, 0.7, 0.8]
    phases = [1, 1, 1, 2, 2, 2, 2, 2, 2]
    gains, gain = trace.new_bests(val, phases)
    assert gains == [3, 5] and gain == pytest.approx(0.3)
    # A phase 2 that never beat phase 1: nothing kept, no gain.
    assert trace.new_bests([1.0, 0.5, 0.6, 0.7], [1, 1, 2, 2]) == ([], 0.0)
    # No phase 2 (skipped, abandoned, phase2=False).
    assert trace.new_bests([1.0, 0.5], [1, 1]) == ([], 0.0)
    # New bests at phase-2 epochs 3 and 5: a patience of 3 reaches both (3 from the
    # switch, then 2), 2 stops at epoch 2; without a new best any patience returns phase
    # 1's state.
    page = _load("results_page")
    assert page.same_result_patience([3, 5]) == 3
    assert page.same_result_patience([2, 9, 10]) == 7
    assert page.same_result_patience([]) == 1


def test_the_phase_two_section_gives_each_traced_units_row(page, tmp_path):
    row = {
        "task": "slcp",
        "num_simulations": "2000",
        "seed": "0",
        "phase2": "ran",
        "returned": "mixture",
        "phase1_epochs": "148",
        "phase1_seconds": "102.2",
        "phase2_epochs": "38",
        "phase2_seconds": "54.7",
        "phase2_new_best_epochs": "1 2 15",
        "phase2_gain_nats": "0.25",
        "best_phase": "2",
        "code": "abc1234",
    }
    (tmp_path / "units.csv").write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    text = "\n".join(page.phase2_section(tmp_path))
    # The wait from epoch 2 to 15 (13) is the smallest patience with the same result.
    line = "| slcp | 2,000 | ran | mixture | 148 (102.2) | 38 (54.7) | 1 2 15 | 0.25 | 13 | 2 | "
    line += "abc1234 |"
    assert line in text


def test_the_throughput_section_gives_sbis_seconds_over_jsbis(page):
    def row(part, tool, n_jobs, seconds, simulations=2000):
        return {"part": part, "simulator": "s", "tool": tool, "n_jobs": str(n_jobs),
                "simulations": str(simulations), "seconds": str(seconds),
                "simulations_per_second": str(round(simulations / seconds))}  # fmt: skip

    rows = [
        row("slow", "jsbi", 1, 2.0),
        row("slow", "jsbi", 2, 1.0),
        row("slow", "sbi simulate_for_sbi", 1, 3.0),
        row("slow", "sbi simulate_for_sbi", 2, 4.0),
    ]
    title, blank, intro, blank2, head, rule, *lines, end = page.throughput_section(rows)
    assert title == "### Simulation throughput" and head.startswith("| part | simulator |")
    assert lines == [
        "| slow | s | jsbi | 1 | 2000 | 2 | 1,000 | - |",
        "| slow | s | jsbi | 2 | 2000 | 1 | 2,000 | - |",
        # sbi's seconds over jsbi's with as many workers.
        "| slow | s | sbi simulate_for_sbi | 1 | 2000 | 3 | 667 | 1.50 |",
        "| slow | s | sbi simulate_for_sbi | 2 | 2000 | 4 | 500 | 4.00 |",
    ]
