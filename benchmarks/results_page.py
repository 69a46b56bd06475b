r"""Writes the docs' results page (``docs/results.md``) and the README's results table from
the recorded CSVs under ``benchmarks/results/``: nothing in either is typed by hand.

Sections, each present when its folder is:

- ``dev/`` and ``heldout/`` (``jsbi benchmark`` output folders, ``benchmark.csv``): per
  task and budget, each method's C2ST (sbibm's MLP definition and sbi's random forest),
  calibration (expected coverage's largest deviation, the share of runs whose coverage
  curve leaves the 95 % band, the share with SBC in band, TARP's ATC), its training
  time, and its C2ST difference to sbi's NPE paired over (observation, seed), beside the
  field's published numbers (``benchmarks/published/c2st.csv``);
- ``fit_cost/`` (``benchmarks/fit_cost.py``): a fit's cost before and after a change;
- ``softmax_cost/`` (``benchmarks/softmax_cost.py``): the spline's softmax;
- ``proxy_sample_cost/`` (``benchmarks/proxy_sample_cost.py``): drawing the proxy with
  each spline;
- ``typicality/`` (``benchmarks/typicality_samples.py``): the misspecification check's
  importance draws and its reference;
- ``probe_trace/`` (``benchmarks/probe_trace.py``): the phase-1 probes' gaps;
- ``phase2_trace/`` (``benchmarks/phase2_trace.py``): whether the default's phase 2 set
  a new best validation NLL, and what it cost;
- ``recalibration/`` (``benchmarks/recalibration_check.py``): the base temperature's
  calibration error on the validation pairs and on fresh pairs;
- ``recalibration_families/`` (``benchmarks/recalibration_families.py``): richer bases
  fitted on the validation pairs, scored on fresh pairs;
- ``calibration_checks/`` (``benchmarks/sbc_false_alarm.py``): SBC's verdict on an exact
  posterior;
- ``proxy_sampler/`` (``benchmarks/proxy_sampler.py``): MCMC against importance resampling;
- ``proxy_sampler_steps/`` (the same script): five MCMC steps against ten;
- ``proxy_sampler_rounds/`` (the same script): chains that go on while they drift;
- ``flow_proxy_mixture/`` (``benchmarks/flow_proxy_mixture.py``, JSON lines): the
  default's flow, its proxy and their mixture from one fit;
- ``time_to_accuracy/`` (``benchmarks/time_to_accuracy.py``): the front.

Usage:
    python benchmarks/results_page.py            # docs/results.md and README.md's block
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: The page's figures, copied from the results folders (Sphinx serves images from docs/).
FIGURES = ROOT / "docs" / "_static" / "results"
PUBLISHED = ROOT / "benchmarks" / "published" / "c2st.csv"
DEFAULT, BASELINE = "jeffreys", "sbi-npe"
DEV_TASKS = ("two_moons", "gaussian_mixture", "slcp", "gaussian_linear_uniform")


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_all(folder: Path) -> list[dict[str, str]]:
    # The rows of every CSV in a results folder.
    return [r for path in sorted(folder.glob("*.csv")) for r in read(path)]


def num(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def mean_sd(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def share(values: list[str]) -> str:
    known = [v for v in values if v in ("True", "False")]
    return f"{sum(v == 'True' for v in known)}/{len(known)}" if known else "-"


def paired(rows: list[dict[str, str]], method: str, key: str = "c2st") -> str:
    # method minus sbi-npe over (observation, seed), mean ± standard error.
    by = {(r["observation"], r["seed"]): num(r[key]) for r in rows if r["method"] == BASELINE}
    diffs = [
        num(r[key]) - by[(r["observation"], r["seed"])]
        for r in rows
        if r["method"] == method and (r["observation"], r["seed"]) in by
    ]
    diffs = [d for d in diffs if math.isfinite(d)]
    if len(diffs) < 2 or method == BASELINE:
        return "-"
    return mean_se(diffs)


def mean_se(diffs: list[float]) -> str:
    # Paired differences: their mean ± its standard error.
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{statistics.fmean(diffs):+.3f} ± {se:.3f}"


def published() -> dict[tuple[str, int], dict[str, str]]:
    out: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    if PUBLISHED.exists():
        for r in read(PUBLISHED):
            label = f"{float(r['c2st']):.3f} {r['method']}" + (
                " (RF)" if r["classifier"] == "rf" else ""
            )
            out[r["task"], int(r["num_simulations"])][r["column"]] = label
    return out


def method_order(methods: set[str]) -> list[str]:
    first = [m for m in (DEFAULT, "npe", BASELINE) if m in methods]
    return first + sorted(methods - set(first))


HEADER = (
    "| method | C2ST (MLP) | C2ST (RF) | vs sbi NPE (MLP, paired) | coverage max dev. | "
    "coverage out of band | SBC in band | TARP ATC | returned | train s | code |"
)


def codes(units: list[dict[str, str]]) -> str:
    # The code each unit was trained with (the rows' ``code``), with a count where it
    # trained several; units written before the rows recorded it are "unrecorded".
    count: dict[str, int] = defaultdict(int)
    for r in units:
        count[r.get("code") or "unrecorded"] += 1
    return ", ".join(f"{c} ({k})" if k > 1 else c for c, k in sorted(count.items()))


def grid_section(title: str, folder: Path, note: str) -> list[str]:
    rows = read(folder / "benchmark.csv")
    pub = published()
    out = [f"## {title}", "", note, ""]
    cells = sorted({(r["task"], int(r["num_simulations"])) for r in rows})
    for task, n in cells:
        cell = [r for r in rows if r["task"] == task and int(r["num_simulations"]) == n]
        seeds = sorted({r["seed"] for r in cell})
        obs = sorted({int(r["observation"]) for r in cell})
        out += [
            f"### {task}, {n:,} simulations",
            "",
            f"Observations {obs[0]}-{obs[-1]}, seeds {', '.join(seeds)}. Published: best "
            f"MLP-comparable {pub[task, n].get('mlp', '-')}; field's best "
            f"{pub[task, n].get('any', '-')}.",
            "",
            HEADER,
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in method_order({r["method"] for r in cell}):
            mr = [r for r in cell if r["method"] == m]
            units = list({r["seed"]: r for r in mr}.values())  # per-unit columns: one per seed
            returned = sorted({r.get("returned", "") for r in mr} - {""})
            # The base temperature each recalibrated unit kept (rows before it lack it).
            temperatures = [num(r.get("temperature")) for r in units]
            kept = ", ".join(f"{t:.2f}" for t in temperatures if math.isfinite(t))
            out.append(
                f"| {m} | {mean_sd([num(r['c2st']) for r in mr])} | "
                f"{mean_sd([num(r.get('c2st_rf')) for r in mr])} | {paired(cell, m)} | "
                f"{mean_sd([num(r.get('coverage_max_deviation')) for r in units])} | "
                f"{share([r.get('coverage_outside_band', '') for r in units])} | "
                f"{share([r.get('sbc_in_band', '') for r in units])} | "
                f"{mean_sd([num(r.get('tarp_atc')) for r in units])} | "
                f"{', '.join(returned) or '-'}{f' (T {kept})' if kept else ''} | "
                f"{mean_sd([num(r.get('train_seconds')) for r in units], 0)} | {codes(units)} |"
            )
        out.append("")
    out += figures(folder)
    return out


def figures(folder: Path) -> list[str]:
    # Each figure of a results folder, copied next to the page, as a markdown image.
    import shutil

    out = []
    for fig in sorted(folder.glob("*.png")):
        name = f"{folder.name}_{fig.name}"
        FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fig, FIGURES / name)
        out += [f"![{fig.stem}](_static/results/{name})", ""]
    return out


def cost_section(title: str, folder: Path) -> list[str]:
    # The default's training time over jsbi npe's, per unit (same simulations and seed),
    # with what its phase 2 did and what it returned.
    rows = read(folder / "benchmark.csv")
    units = {(r["task"], r["num_simulations"], r["seed"], r["method"]): r for r in rows}
    out = [
        f"### Training cost, {title}",
        "",
        "The default's training time over jsbi npe's on the same simulations and seed, with "
        "what its phase 2 did (ran; skipped at the switch; the proxy abandoned in phase 1; "
        "never reached) and what it returned.",
        "",
        "| task | N | seed | default / npe | phase 2 | returned |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for (task, n, seed, method), r in sorted(units.items()):
        base = units.get((task, n, seed, "npe"))
        if method != DEFAULT or base is None:
            continue
        ratio = num(r["train_seconds"]) / num(base["train_seconds"])
        ratios.append(ratio)
        out.append(
            f"| {task} | {int(n):,} | {seed} | {ratio:.2f} | {r.get('phase2') or '-'} | "
            f"{r.get('returned', '-')} |"
        )
    if ratios:
        out += ["", f"Median over the grid: {statistics.median(ratios):.2f}."]
    return [*out, ""]


def table(title: str | None, intro: str, header: list[str], cells: list[list]) -> list[str]:
    # A section (or, without a title, a paragraph) with one table: the command, then rows.
    out = [f"## {title}", ""] if title else []
    out += [intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]
    return [*out, ""]


def probe_section(folder: Path) -> list[str]:
    by_task: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in read_all(folder):
        by_task[r["task"]].append(r)
    return table(
        "The phase-1 probes: when does the proxy trail?",
        "`OMP_NUM_THREADS=1 python benchmarks/probe_trace.py --out "
        "benchmarks/results/probe_trace/dev_1k.csv`: the default at 1,000 simulations "
        "(seed 0); at each probe epoch the proxy's validation NLL minus the flow's ± its "
        "standard error (64 importance draws; negative: the proxy is ahead), then what the "
        "run did and the final measurement (256 draws) that chose what it returned.",
        ["task", "probes: epoch gap ± se", "phase 2", "returned", "final gap"],
        [
            [
                task,
                "; ".join(f"{r['probe_epoch']}: {r['gap']} ± {r['gap_se']}" for r in rows),
                rows[0]["phase2"],
                rows[0]["returned"],
                f"{rows[0]['final_gap']} ± {rows[0]['final_gap_se']}",
            ]
            for task, rows in by_task.items()
        ],
    )


def same_result_patience(gains: list[int]) -> int:
    r"""The smallest phase-2 patience that returns the same state as a traced run whose
    phase 2 set new bests at ``gains`` (1-based phase-2 epochs): the longest wait for the
    next new best, from the switch (phase 2 ends once ``patience`` epochs pass without
    one). 1 where it set none: the state is phase 1's whatever the patience."""
    steps = [b - a for a, b in zip([0, *gains], gains, strict=False)]
    return max(steps, default=1)


def phase2_section(folder: Path) -> list[str]:
    return table(
        "Does phase 2 change the default's result?",
        "`OMP_NUM_THREADS=1 python benchmarks/phase2_trace.py --units TASK:N,... --seed 0 "
        "--out benchmarks/results/phase2_trace/front_units.csv`, with the package of the "
        "front's units (their `code`) on `PYTHONPATH`: the default trained again on a "
        "front unit's simulations (training only; each run inside another unit's untimed "
        "C2ST scoring, so its seconds are upper bounds). Phase 2's state is kept only where "
        "it lowers the flow's validation NLL below phase 1's best; `new best at`: the "
        "phase-2 epochs that did (none: the run returned phase 1's state, what "
        "`jeffreys-nophase2` returns, and phase 2's seconds bought nothing); `same result "
        "from patience`: the smallest phase-2 patience (`phase2_patience`; today the "
        "loop's 20) that returns the same state, since phase 2's trajectory does not "
        "depend on where it stops.",
        [
            "task",
            "N",
            "phase 2",
            "returned",
            "phase 1 epochs (s)",
            "phase 2 epochs (s)",
            "new best at",
            "gain (nats)",
            "same result from patience",
            "best phase",
            "code",
        ],
        [
            [
                r["task"],
                f"{int(r['num_simulations']):,}",
                r["phase2"],
                r["returned"],
                f"{r['phase1_epochs']} ({r['phase1_seconds']})",
                f"{r['phase2_epochs']} ({r['phase2_seconds']})",
                r["phase2_new_best_epochs"] or "none",
                r["phase2_gain_nats"],
                same_result_patience([int(e) for e in r["phase2_new_best_epochs"].split()]),
                r["best_phase"],
                r.get("code") or "unrecorded",
            ]
            for r in sorted(read_all(folder), key=lambda r: (r["task"], int(r["num_simulations"])))
        ],
    )


def recalibration_section(folder: Path) -> list[str]:
    def cov(r: dict[str, str], key: str) -> str:
        return f"{num(r[key]):+.3f}" if r.get(key) else "-"

    return table(
        "Recalibration by a base temperature",
        "`OMP_NUM_THREADS=1 python benchmarks/recalibration_check.py --tasks "
        "two_moons,gaussian_mixture,slcp --out benchmarks/results/recalibration/npe_1k.csv` "
        "and `... --tasks two_moons --num-simulations 10000 --temperatures "
        "0.85,1,1.1,1.2,1.35,1.5 --coverage --out benchmarks/results/recalibration/"
        "npe_10k.csv`: npe (seed 0); the calibration error `recalibrate` minimises "
        "(the mean distance of the truths' sorted credibility levels to uniform quantiles) "
        "at each temperature, on the fit's validation pairs (a tenth of the simulations) "
        "and on 500 fresh pairs; with `--coverage`, the expected-coverage deviations on the "
        "fresh pairs (200 samples each), and the temperature `recalibrate` kept (`fitted`; "
        "run before its NLL guard, i.e. `nll_tolerance=None`).",
        ["task", "N", "T", "validation pairs", "fresh pairs", "coverage max dev.", "mean dev."],
        [
            [r["task"], r["num_simulations"], r["temperature"], r["validation_error"]]
            + [r["fresh_error"], cov(r, "coverage_max_deviation")]
            + [cov(r, "coverage_mean_deviation")]
            for r in read_all(folder)
        ],
    )


def families_section(folder: Path) -> list[str]:
    def dev(value: str) -> str:
        return f"{num(value):+.3f}"

    return table(
        "Recalibration: richer bases fitted on the validation pairs",
        "`OMP_NUM_THREADS=1 python benchmarks/recalibration_families.py --tasks two_moons,"
        "gaussian_mixture,slcp,gaussian_linear_uniform --out benchmarks/results/"
        "recalibration_families/families_1k.csv`: npe at 1,000 simulations (seed 0), its "
        "base replaced (the density stays normalised) by a temperature chosen by "
        "`recalibrate`'s calibration error alone (w1-temperature, `nll_tolerance=None`) or "
        "with its default NLL guard (guarded-temperature), the maximum-likelihood "
        "temperature of the "
        "validation pairs' latent codes (mle-temperature), or a Student-t base fitted "
        "likewise (student-t; nu = inf is Gaussian); calibration on 1,000 fresh pairs, "
        "200 samples each (the target: coverage inside its band, |max deviation| <= 0.05, "
        "SBC in band).",
        ["task", "base", "T", "nu", "coverage max dev.", "mean dev.", "coverage out of band"]
        + ["SBC in band", "TARP ATC", "NLTP"],
        [
            [r["task"], r["variant"], r["scale"], r["nu"], dev(r["coverage_max_deviation"])]
            + [dev(r["coverage_mean_deviation"]), r["coverage_outside_band"], r["sbc_in_band"]]
            + [dev(r["tarp_atc"]), f"{num(r['nltp']):.3f} ± {num(r['nltp_se']):.3f}"]
            for r in read_all(folder)
        ],
    )


def sbc_false_alarm_section(folder: Path) -> list[str]:
    return table(
        "SBC's verdict on an exact posterior",
        "`OMP_NUM_THREADS=1 python benchmarks/sbc_false_alarm.py --out benchmarks/results/"
        "calibration_checks/sbc_false_alarm.csv`: the share of seeds at which the exact "
        "posterior of a conjugate Gaussian model is called out of band, with one 95% band "
        "per parameter and with the family-wise bands `check_sbc` uses (each parameter's "
        "at 1 - 0.05/d). The grids' rows written before the family-wise verdict (commit "
        "678d7ae) used one 95% band per parameter: every development row, every "
        "summaries row, and the held-out rows except bernoulli_glm and lotka_volterra at "
        "10,000 and gaussian_linear.",
        ["parameters", "seeds", "pairs", "samples / pair", "per-parameter bands", "family-wise"],
        [
            [r["dim"], r["seeds"], r["pairs"], r["samples"]]
            + [r["out_of_band_per_parameter_bands"], r["out_of_band_family_wise"]]
            for r in read_all(folder)
        ],
    )


def ensemble_section(folder: Path) -> list[str]:
    return table(
        "Ensembles: one batched module against separate fits",
        "`python benchmarks/ensemble_cost.py --num-simulations 10000 --epochs 5 --out "
        "benchmarks/results/ensemble_cost/ensemble_cost.csv`: npe on two_moons, seconds "
        "per epoch of `ensemble=K` against K separate fits, one torch thread.",
        ["K", "batched s / epoch", "K separate fits s / epoch", "speed-up"],
        [
            [r["members"], r["batched_seconds_per_epoch"], r["separate_seconds_per_epoch"]]
            + [f"{r['speed_up']}x"]
            for r in read_all(folder)
        ],
    )


def evidence_section(folder: Path) -> list[str]:
    return table(
        "The evidence against its closed form",
        "`python benchmarks/evidence.py --num-simulations 2000 --out "
        "benchmarks/results/evidence/evidence.csv`: gaussian_linear (10-D), jeffreys' "
        "likelihood proxy, `log_evidence` at 20 draws of p(x) against the exact log "
        "density; the error is the fitted likelihood's (the Monte Carlo standard error is "
        "the last column).",
        ["N", "likelihood flow", "mean abs. error (nats)", "max abs. error", "max MC se"],
        [
            [f"{int(r['num_simulations']):,}", r["likelihood"], r["mean_abs_error"]]
            + [r["max_abs_error"], r["max_se"]]
            for r in read_all(folder)
        ],
    )


#: Each recorded fit-cost comparison: its file under fit_cost/, its title and what it is.
FIT_COSTS = [
    (
        "dev_1k.csv",
        "What a fit costs, before and after a change",
        "--tasks two_moons,gaussian_mixture,slcp,gaussian_linear_uniform",
        "npe and the default at 1,000 simulations, seed 0",
    ),
    (
        "abandoned.csv",
        None,
        "--tasks bernoulli_glm_raw",
        "a held-out task where the default abandons its proxy in phase 1 (100-D x), at "
        "1,000 simulations, seed 0; the newer code's reference of the misspecification "
        "check is the flow's embedding there, not the abandoned proxy's evidence",
    ),
]


def fit_cost_section(folder: Path) -> list[str]:
    out: list[str] = []
    for name, title, tasks, what in FIT_COSTS:
        if (folder / name).exists():
            out += _fit_cost_table(read(folder / name), name, title, tasks, what)
    return out


def _fit_cost_table(
    rows: list[dict[str, str]], name: str, title: str | None, tasks: str, what: str
) -> list[str]:
    npe = {(r["task"], r["code"]): num(r["seconds"]) for r in rows if r["method"] == "npe"}
    return table(
        title,
        f"`OMP_NUM_THREADS=1 python benchmarks/fit_cost.py --old <commit> {tasks} --out "
        f"benchmarks/results/fit_cost/{name}`: {what}, trained by each commit's package "
        "(`code`) on the same pairs, one process at a time on an otherwise idle machine. "
        "`after` is the work after the last epoch (the choice, the misspecification "
        "reference), which code before ae382b7 did not record.",
        ["task", "code", "method", "fit s", "epochs s", "after s", "x npe", "probes"]
        + ["phase 2", "returned", "best val. NLL"],
        [
            [r["task"], r["code"], r["method"], r["seconds"], r["epochs_seconds"]]
            + [r["decide_seconds"] or "-"]
            + [f"{num(r['seconds']) / npe.get((r['task'], r['code']), math.nan):.2f}"]
            + [r["probes"], r["phase2"] or "-", r["returned"], r["best_validation_nll"]]
            for r in rows
        ],
    )


def _gap(row: dict[str, str], key: str = "proxy_minus_flow") -> str:
    # A final validation NLL gap with its standard error ("-": npe has no proxy).
    value = num(row.get(key))
    if math.isnan(value):
        return "-"
    return f"{value:+.3f} ± {num(row[key + '_se']):.3f}"


def task_order(task: str) -> tuple[int, str]:
    # The development tasks in their usual order, then the others by name.
    return (DEV_TASKS.index(task) if task in DEV_TASKS else len(DEV_TASKS), task)


def variants_section(folder: Path) -> list[str]:
    rows = read_all(folder)
    npe = {r["task"]: num(r["seconds"]) for r in rows if r["method"] == "npe"}
    return table(
        None,
        "Options that may cut the proxy's cost, this checkout alone: `OMP_NUM_THREADS=1 "
        "python benchmarks/fit_cost.py --variants 'proxy_every=2;proxy_patience=10' "
        "--tasks two_moons,gaussian_mixture,slcp,gaussian_linear_uniform --out "
        "benchmarks/results/fit_cost/variants/dev_1k.csv`; `gap` is the final "
        "proxy-minus-flow NLL (± its standard error; negative: the proxy is the better "
        "model), which decides what is returned. Times only: their C2ST is not measured.",
        ["task", "method", "fit s", "x npe", "phase 2", "returned", "gap", "best val. NLL"],
        [
            [r["task"], r["method"], r["seconds"]]
            + [f"{num(r['seconds']) / npe.get(r['task'], math.nan):.2f}", r["phase2"] or "-"]
            + [r["returned"], _gap(r)]
            + [r["best_validation_nll"]]
            for r in rows
        ],
    )


def softmax_section(folder: Path) -> list[str]:
    out = table(
        "The spline's softmax",
        "`OMP_NUM_THREADS=1 python benchmarks/softmax_cost.py --out "
        "benchmarks/results/softmax_cost/softmax_cost.csv`: torch's softmax over the last "
        "dimension against `exp` and a sum (`jsbi.flows.spline`), alone and in a 10-D "
        "neural spline flow (5 transforms, 10 bins) with the same weights, one thread.",
        ["what", "torch ms", "jsbi ms", "speed-up"],
        [[r["what"], r["torch_ms"], r["jsbi_ms"], f"{r['speed_up']}x"] for r in read_all(folder)],
    )
    paired = read_all(folder / "paired")
    cells = []
    for task in sorted({r["task"] for r in paired}):
        mine = [r for r in paired if r["task"] == task]
        by = {(r["seed"], r["spline"]): num(r["best_validation_nll"]) for r in mine}
        seeds = sorted({r["seed"] for r in mine}, key=int)
        diff = [by[s, "jsbi"] - by[s, "zuko"] for s in seeds]
        se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
        # (Its seconds are not shown: that run shared the machine, and was paused.)
        epochs = [
            statistics.fmean(num(r["epochs"]) for r in mine if r["spline"] == k)
            for k in ("zuko", "jsbi")
        ]
        cells.append([task, len(seeds), f"{statistics.fmean(diff):+.3f} ± {se:.3f}"])
        cells[-1] += [f"{e:.0f}" for e in epochs]
    if not cells:
        return out
    return out + table(
        None,
        "The same model up to rounding, which early stopping may turn into another run: "
        "`OMP_NUM_THREADS=1 python benchmarks/softmax_cost.py --paired "
        "two_moons,gaussian_mixture --out benchmarks/results/softmax_cost/paired/npe.csv` "
        "trains npe at 1,000 simulations with each spline on the same pairs and seed.",
        ["task", "seeds", "best val. NLL, jsbi - zuko (mean ± se)", "epochs, zuko"]
        + ["epochs, jsbi"],
        cells,
    )


def proxy_sample_section(folder: Path) -> list[str]:
    return table(
        "Drawing the proxy: zuko's spline flow and jsbi's",
        "`python benchmarks/proxy_sample_cost.py --threads 1,2 --task "
        "gaussian_linear_uniform --seed 1 --out "
        "benchmarks/results/proxy_sample_cost/gaussian_linear_uniform.csv`: one trained "
        "proxy posterior (1,000 simulations) loaded with each spline flow (jsbi's: its softmax "
        "and its inverse that settles one parameter per pass), 10,000 samples at "
        "observation 1 with the same seed, with 1 torch thread and with 2 (this 2-core "
        "machine's default), nothing else running. `posterior`: the proxy's, or the "
        "mixture of the same flow and proxy (`--splines jsbi --posteriors proxy,mixture "
        "--threads 2`, written to `gaussian_linear_uniform_mixture.csv`; rows without it "
        "are the proxy's).",
        ["task", "spline", "posterior", "threads", "seconds", "IMH acceptance", "split R-hat"]
        + ["code"],
        [
            [r["task"], r["spline"], r.get("posterior") or "proxy", r.get("threads", 1)]
            + [r["seconds"], r["imh_acceptance"], r["rhat"], r.get("code") or "unrecorded"]
            for r in read_all(folder)
        ],
    )


def mixture_section(folder: Path) -> list[str]:
    rows = [
        json.loads(line)
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line
    ]
    rows = [r for r in rows if "c2st_mixture" in r]  # (an abandoned proxy has no mixture)
    rows.sort(key=lambda r: (task_order(r["task"]), r["n"], r["seed"]))
    cells, by_noise = [], defaultdict(list)
    for r in rows:
        z = r["val_gap"] / r["val_se"]
        noise = "proxy ahead" if z < -1 else "within 1 se" if z <= 1 else "flow ahead"
        # The one model the one-standard-error rule picks: the proxy where auto returned
        # it, the flow where it returned the flow (older code) or the mixture.
        single = r["c2st_proxy" if r["returned"] == "proxy" else "c2st_flow"]
        by_noise[noise].append(statistics.fmean(r["c2st_mixture"]) - statistics.fmean(single))
        cal = {k: r[f"cal_{k}"] for k in ("flow", "proxy", "mixture")}
        cells.append(
            [r["task"], r["n"], r["seed"], f"{r['returned']} ({z:+.1f} se)"]
            + [f"{statistics.fmean(r[f'c2st_{k}']):.3f}" for k in ("flow", "proxy", "mixture")]
            + [mean_se([a - b for a, b in zip(r["c2st_mixture"], single, strict=True)])]
            + [" / ".join(f"{cal[k]['coverage_max_deviation']:+.3f}" for k in cal)]
            + [" / ".join("in" if cal[k]["sbc_in_band"] else "out" for k in cal)]
            + [" / ".join(f"{cal[k]['nltp']:.2f}" for k in cal)]
            + [r["code"]]
        )
    first = rows[0] if rows else {}
    out = table(
        "The flow, the proxy, and their mixture",
        "`OMP_NUM_THREADS=1 python benchmarks/flow_proxy_mixture.py --num-simulations N "
        "--units TASK:SEED ... --out benchmarks/results/flow_proxy_mixture/dev.jsonl`: one "
        "jeffreys fit per row; its flow's posterior, its likelihood proxy's, and their equal "
        "mixture (`posterior='mixture'`). `returned`: what `posterior='auto'` returned under "
        "the row's code (the flow, before auto returned the mixture where the proxy is not "
        "ahead), with the proxy's validation NLL minus the flow's in its standard errors. "
        "`single`: the one model the one-standard-error rule picks (the proxy where it was "
        "returned, else the flow). C2ST (MLP) is "
        f"the mean over observations 1-5 at {first.get('num_samples', '-')} samples; "
        "`mixture - single` is paired over the 5 observations (mean ± se). Calibration "
        f"(flow / proxy / mixture) on {first.get('pairs', '-')} fresh pairs x "
        f"{first.get('pair_samples', '-')} samples: coverage max deviation, SBC in band, "
        "NLTP. Two processes at a time on the 2 cores.",
        ["task", "N", "seed", "returned", "flow", "proxy", "mixture", "mixture - single"]
        + ["coverage max dev.", "SBC", "NLTP", "code"],
        cells,
    )
    summary = [
        [k, len(v), f"{statistics.fmean(v):+.3f}", f"{sum(d < 0 for d in v)}/{len(v)}"]
        for k in ("proxy ahead", "within 1 se", "flow ahead")
        if (v := by_noise[k])
    ]
    return out + table(
        None,
        "By how the validation gap stood (the mixture's C2ST minus the single model's, "
        "mean over the rows; `lower`: rows where the mixture's was lower):",
        ["validation gap", "rows", "mixture - single", "lower"],
        summary,
    )


def choice_section(title: str, folder: Path) -> list[str]:
    # What the default returned per unit, and the validation measurement that chose it.
    # Each unit's rows of the default and of sbi NPE (the paired difference's), read once.
    same = defaultdict(list)
    for r in read(folder / "benchmark.csv"):
        if r["method"] in (DEFAULT, BASELINE):
            same[r["task"], int(r["num_simulations"]), r["seed"]].append(r)
    cells = []
    for (task, n, seed), both in sorted(same.items(), key=lambda u: (task_order(u[0][0]), u[0])):
        ur = [u for u in both if u["method"] == DEFAULT and u.get("validation_proxy_minus_flow")]
        if not ur:
            continue
        r = ur[0]
        cells.append(
            [task, f"{n:,}", seed, r["returned"]]
            + [_gap(r, "validation_proxy_minus_flow"), _gap(r, "validation_mixture_minus_flow")]
            + [mean_sd([num(u["c2st"]) for u in ur]), paired(both, DEFAULT), r["code"]]
        )
    if not cells:
        return []
    return table(
        f"What the default returned ({title})",
        "Per unit: what `posterior='auto'` returned, from the proxy's last measurement on "
        "the validation pairs (its NLL and the equal mixture's, each minus the flow's, "
        "nats per pair, mean ± se; the proxy is returned where its gap is below minus one "
        "se, else the mixture); the default's C2ST (MLP, mean ± sd over the observations) "
        "and its paired difference to sbi NPE (mean ± se). Units whose rows predate the "
        "measurement's columns are not listed.",
        [
            "task",
            "N",
            "seed",
            "returned",
            "proxy - flow",
            "mixture - flow",
            "C2ST",
            "C2ST - sbi NPE",
            "code",
        ],
        cells,
    )


def typicality_section(folder: Path) -> list[str]:
    out: list[str] = []
    if (folder / "samples.csv").exists():
        out += _typicality_table(
            read(folder / "samples.csv"),
            ("task", "draws", "reference_seconds"),
            "The misspecification check's importance draws",
            "`OMP_NUM_THREADS=1 python benchmarks/typicality_samples.py --tasks two_moons,slcp "
            "--draws 256,64,32 --references model --fresh 200 --out "
            "benchmarks/results/typicality/samples.csv`: jeffreys at 1,000 simulations "
            "(seed 0); the reference (1,000 draws of the learned prior predictive) with S "
            "importance draws per log evidence, and the share of 200 fresh simulations of the "
            "true simulator flagged at p < 0.01, as they are and moved off the model. "
            "Flagging unmoved simulations is the learned model's own error at this budget.",
            ["task", "S", "reference s"],
        )
    if (folder / "references.csv").exists():
        extra = [folder / "embedding.csv", folder / "combined.csv"]
        out += _typicality_table(
            read(folder / "references.csv") + [r for f in extra if f.exists() for r in read(f)],
            ("task", "reference", "reference_size", "reference_seconds"),
            None,
            "The check's reference: `OMP_NUM_THREADS=1 python "
            "benchmarks/typicality_samples.py --tasks two_moons,slcp --draws 64 --references "
            "held-out,model --fresh 1000 --out benchmarks/results/typicality/references.csv`: "
            "the same fits, 64 draws, the log evidence of the fit's validation simulations "
            "(held-out: never trained on) or of 1,000 draws of the learned model (model), and "
            "the share of 1,000 fresh simulations flagged at p < 0.01 (a valid check flags at "
            "most 0.01 of the true simulator's, within a binomial standard error of 0.003). "
            "`embedding` is the check of a posterior without a likelihood proxy (npe's), on "
            "the same fits' flows: `--references embedding --out "
            "benchmarks/results/typicality/embedding.csv`. `combined` is the default since "
            "then, the held-out evidence with the embedding check beside it (twice the "
            "smaller p-value): `--references combined --out "
            "benchmarks/results/typicality/combined.csv`.",
            ["task", "reference", "size", "reference s"],
        )
    return out


def _typicality_table(
    rows: list[dict[str, str]], key: tuple[str, ...], title: str | None, intro: str, head: list
) -> list[str]:
    cells: dict[tuple, dict[str, str]] = defaultdict(dict)
    for r in rows:
        cells[tuple(r[k] for k in key)][r["set"]] = f"{num(r['flagged']):.3f}"
    return table(
        title,
        intro,
        [*head, "flagged: true", "shift 1 sd", "shift 3 sd", "noise 1 sd"],
        [[*k, *(flagged.get(s, "-") for s in SETS)] for k, flagged in cells.items()],
    )


SETS = ("true", "shift 1 sd", "shift 3 sd", "noise 1 sd")


def summary_table(folder: Path) -> list[str]:
    # The README's one table: the default, jsbi npe and sbi NPE on the development set.
    rows = read(folder / "benchmark.csv")
    out = [
        "| task | N | jeffreys (default) | jsbi npe | sbi NPE | default - sbi NPE | "
        "coverage max dev. (default / sbi NPE) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, n in sorted({(r["task"], int(r["num_simulations"])) for r in rows}):
        cell = [r for r in rows if r["task"] == task and int(r["num_simulations"]) == n]

        def c2st(m: str, cell: list[dict[str, str]] = cell) -> str:
            return mean_sd([num(r["c2st"]) for r in cell if r["method"] == m])

        def cov(m: str, cell: list[dict[str, str]] = cell) -> str:
            units = {r["seed"]: r for r in cell if r["method"] == m}.values()
            return mean_sd([num(r.get("coverage_max_deviation")) for r in units], 2)

        out.append(
            f"| {task} | {n:,} | {c2st(DEFAULT)} | {c2st('npe')} | {c2st(BASELINE)} | "
            f"{paired(cell, DEFAULT)} | {cov(DEFAULT)} / {cov(BASELINE)} |"
        )
    return out


SAMPLER_INTRO = (
    "`benchmarks/proxy_sampler.py`: the default's proxy at 1,000 simulations, seed 0, "
    "observations 1-5; `flow` is the flow itself, `importance` importance resampling "
    "from it, `mcmc-k` k steps of the MCMC sampler (each an independence step and a "
    "MALA step), `imh-k` independence steps alone. 2,000 samples per C2ST; seconds "
    "per 10,000 samples at one observation, on a shared 2-core CPU."
)
SBI_SAMPLER_INTRO = (
    "`python benchmarks/proxy_sampler.py --tasks two_moons --num-simulations 1000 "
    "--observations 1 2 3 --variants mcmc-10,sbi-slice --out "
    "benchmarks/results/proxy_sampler_sbi`: one trained proxy (seed 0), sampled by "
    "jsbi's sampler (10 steps) and by sbi's `MCMCPosterior` with its defaults "
    "(vectorised slice sampling, 20 chains, 200 warm-up steps) on the potential "
    "`-E(theta, x)`; 10,000 samples per observation, 2,000 per C2ST."
)

ROUNDS_INTRO = (
    "`OMP_NUM_THREADS=1 python benchmarks/proxy_sampler.py --tasks gaussian_linear_uniform "
    "--num-simulations 1000 --seed 1 --variants mcmc-10,mcmc-10-to-40,mcmc-40 --out "
    "benchmarks/results/proxy_sampler_rounds`: the development cell whose proxy's "
    "population still drifted after 10 steps in the grid (0.11-0.20 at 10,000 samples). "
    "One jeffreys proxy (`posterior='proxy'`), sampled at observations 1-5 with 10 steps "
    "(the default), with rounds of 10 while the population still drifts, up to 40 "
    "(`mcmc_max_steps=40`), and with 40. The drift is the population's over the last "
    "round's second half; steps are those run. Chains run closer to the proxy scored "
    "worse, so the rounds stay an option. Two processes on the 2 cores: the times are "
    "upper bounds."
)


def sampler_section(folder: Path, title: str, intro: str) -> list[str]:
    # One row per (task, sampler) of benchmarks/proxy_sampler.py's rows.
    # (Rows written since the chains could go on also give the drift and the steps run.)
    rows = read_all(folder)
    rounds = any(r.get("num_steps") for r in rows)
    head = "| task | sims | sampler | C2ST (MLP) | C2ST (RF) | distinct | s / 10k | IMH acc. |"
    out = [f"## {title}", "", intro, ""]
    out += [head + (" drift | steps |" if rounds else ""), "|---" * (8 + 2 * rounds) + "|"]
    for task, n in sorted({(r["task"], int(r["num_simulations"])) for r in rows}):
        cell = [r for r in rows if r["task"] == task and int(r["num_simulations"]) == n]
        for variant in sorted({r["variant"] for r in cell}):
            vr = [r for r in cell if r["variant"] == variant]
            line = (
                f"| {task} | {n:,} | {variant} | {mean_sd([num(r['c2st']) for r in vr])} | "
                f"{mean_sd([num(r['c2st_rf']) for r in vr])} | "
                f"{mean_sd([num(r['distinct']) for r in vr], 2)} | "
                f"{mean_sd([num(r['seconds_per_10k']) for r in vr], 1)} | "
                f"{mean_sd([num(r.get('imh_acceptance')) for r in vr], 2)} |"
            )
            if rounds:
                line += (
                    f" {mean_sd([num(r.get('drift')) for r in vr], 2)} | "
                    f"{mean_sd([num(r.get('num_steps')) for r in vr], 0)} |"
                )
            out.append(line)
    return [*out, ""]


def front_section(folder: Path) -> list[str]:
    out = ["## Time to accuracy", ""]
    readme = folder / "README.md"
    if readme.exists():
        out += [readme.read_text().strip(), ""]
    out += figures(folder)
    table = folder / "front.md"
    if table.exists():
        out += [table.read_text().strip(), ""]
    throughput = RESULTS / "simulation" / "throughput.csv"
    if throughput.exists():
        out += throughput_section(read(throughput))
    return out


THROUGHPUT_INTRO = (
    "`OMP_NUM_THREADS=1 python benchmarks/simulation.py --out "
    "benchmarks/results/simulation/throughput.csv`, alone on the 2-core machine: each built-in "
    "task's simulator, jsbi's and sbibm's, on the same 10,000 prior draws in one call; then a "
    "per-sample Python simulator (13,000 steps of a Python loop a call: 0.65 ms here), 2,000 "
    "draws, through `jsbi.simulate` and sbi's `simulate_for_sbi` with the same batch size, "
    "on one worker and on two. "
    "`/ jsbi`: the seconds over jsbi's in the same setting (above 1: jsbi is faster)."
)


def throughput_section(rows: list[dict[str, str]]) -> list[str]:
    # benchmarks/simulation.py's figures: the simulation side of the front's times.
    jsbi = {
        (r["part"], r["simulator"], r["n_jobs"]): num(r["seconds"])
        for r in rows
        if r["tool"] == "jsbi"
    }
    cells = []
    for r in rows:
        seconds = num(r["seconds"])
        mine = jsbi.get((r["part"], r["simulator"], r["n_jobs"]), math.nan)
        cells.append(
            [r["part"], r["simulator"], r["tool"], r["n_jobs"], r["simulations"],
             f"{seconds:.3g}", f"{int(r['simulations_per_second']):,}",
             "-" if r["tool"] == "jsbi" else f"{seconds / mine:.2f}"]
        )  # fmt: skip
    header = ["part", "simulator", "tool", "workers", "simulations", "seconds",
              "simulations/s", "/ jsbi"]  # fmt: skip
    return ["### Simulation throughput", "", *table(None, THROUGHPUT_INTRO, header, cells)]


def page() -> str:
    out = [
        "# Results",
        "",
        "Generated by `python benchmarks/results_page.py` from the CSVs under "
        "`benchmarks/results/`; the commands that wrote them are in each section. C2ST is "
        "0.5 when the samples are indistinguishable from the reference posterior. "
        "Calibration is measured on 500 fresh prior-predictive pairs per (task, budget, "
        "method, seed): a negative coverage deviation is over-confidence. C2ST columns are "
        "the mean ± sd over observations x seeds; the paired difference to sbi NPE (trained "
        "on the same simulations with the same seed) is the mean ± its standard error; the "
        "per-run columns (calibration, time) are the mean ± sd over seeds. `code`: the "
        "commit that trained each unit (with a count where several did; `+changes`: with "
        "uncommitted changes to jsbi), `unrecorded` for units run before the rows "
        "recorded it: a cell's methods compare fairly only where they share one.",
        "",
    ]
    dev, held = RESULTS / "dev", RESULTS / "heldout"
    if (dev / "benchmark.csv").exists():
        out += grid_section(
            "Development set",
            dev,
            "The four development tasks, observations 1-5 (the defaults were chosen here). "
            "Command: `jsbi benchmark --tasks two_moons,gaussian_mixture,slcp,"
            "gaussian_linear_uniform --num-simulations 1000,10000 --seeds 0,1 "
            "--observations 1,2,3,4,5 --out benchmarks/results/dev` (with `--objectives` "
            "naming the methods). `(T ...)`: the base temperature each recalibrated unit "
            "kept (units run before the rows recorded it show none). Units whose code "
            "predates `posterior='auto'` returning the mixture of the flow and the proxy "
            "(where the proxy is not clearly ahead) returned the flow there; the section "
            "after the cost lists what each unit of the default returned and why.",
        )
    if (dev / "benchmark.csv").exists():
        out += cost_section("development set", dev)
        out += choice_section("development set", dev)
    if (held / "benchmark.csv").exists():
        out += grid_section(
            "Held-out set",
            held,
            "Never tuned on: the other tasks, seed 0 (the observations are named per cell). "
            "Command: `jsbi benchmark --tasks bernoulli_glm,sir,lotka_volterra,slcp_distractors,"
            "bernoulli_glm_raw "
            "--num-simulations 1000,10000 "
            "--objectives jeffreys,npe,sbi-npe --seeds 0 --observations 6,7,8,9,10 --out "
            "benchmarks/results/heldout`; gaussian_linear with `--observations "
            "1,2,3,4,5,6,7,8,9,10`.",
        )
    if (held / "benchmark.csv").exists():
        out += cost_section("held-out set", held)
        out += choice_section("held-out set", held)
    if (RESULTS / "summaries" / "benchmark.csv").exists():
        out += grid_section(
            "Held-out set: a likelihood of learned summaries",
            RESULTS / "summaries",
            "High-dimensional x, every method (sbi NPE too) reading x through the same "
            "fresh MLP embedding (20 features) trained with its flow: jeffreys-summary's "
            "likelihood proxy models the embedding's summaries s(x), jeffreys' models x "
            "itself. Command: `jsbi benchmark --tasks slcp_distractors,bernoulli_glm_raw,sir,"
            "lotka_volterra --num-simulations 1000,10000 --objectives "
            "jeffreys-summary,jeffreys,npe,sbi-npe "
            "--seeds 0 --observations 6,7,8,9,10 --embedding mlp --out "
            "benchmarks/results/summaries`.",
        )
    if (RESULTS / "fit_cost").exists():
        out += fit_cost_section(RESULTS / "fit_cost")
    if (RESULTS / "fit_cost" / "variants").exists():
        out += variants_section(RESULTS / "fit_cost" / "variants")
    if (RESULTS / "softmax_cost").exists():
        out += softmax_section(RESULTS / "softmax_cost")
    if (RESULTS / "proxy_sample_cost").exists():
        out += proxy_sample_section(RESULTS / "proxy_sample_cost")
    if (RESULTS / "evidence").exists():
        out += evidence_section(RESULTS / "evidence")
    if (RESULTS / "typicality").exists():
        out += typicality_section(RESULTS / "typicality")
    if (RESULTS / "probe_trace").exists():
        out += probe_section(RESULTS / "probe_trace")
    if (RESULTS / "phase2_trace").exists():
        out += phase2_section(RESULTS / "phase2_trace")
    if (RESULTS / "recalibration").exists():
        out += recalibration_section(RESULTS / "recalibration")
    if (RESULTS / "recalibration_families").exists():
        out += families_section(RESULTS / "recalibration_families")
    if (RESULTS / "calibration_checks").exists():
        out += sbc_false_alarm_section(RESULTS / "calibration_checks")
    if (RESULTS / "ensemble_cost").exists():
        out += ensemble_section(RESULTS / "ensemble_cost")
    if (RESULTS / "proxy_sampler").exists():
        out += sampler_section(
            RESULTS / "proxy_sampler",
            "Sampling the proxy: MCMC against importance resampling",
            SAMPLER_INTRO,
        )
    if (RESULTS / "proxy_sampler_sbi").exists():
        out += sampler_section(
            RESULTS / "proxy_sampler_sbi",
            "jsbi's MCMC against sbi's slice sampler on the same proxy",
            SBI_SAMPLER_INTRO,
        )
    if (RESULTS / "proxy_sampler_steps").exists():
        out += sampler_section(
            RESULTS / "proxy_sampler_steps",
            "Five steps or ten",
            "`OMP_NUM_THREADS=1 python benchmarks/proxy_sampler.py --tasks two_moons "
            "gaussian_mixture slcp gaussian_linear_uniform --num-simulations 1000 --variants "
            "mcmc-5,mcmc-10 --out benchmarks/results/proxy_sampler_steps`: one jeffreys "
            "proxy per task (seed 0, `posterior='proxy'`), sampled at observations 1-5 with "
            "5 and 10 MCMC steps (jsbi's NSF with its ranked inverse; two processes on the "
            "2 cores, so the times are upper bounds).",
        )
    if (RESULTS / "proxy_sampler_rounds").exists():
        out += sampler_section(
            RESULTS / "proxy_sampler_rounds",
            "Chains that go on while they drift",
            ROUNDS_INTRO,
        )
    if (RESULTS / "flow_proxy_mixture").exists():
        out += mixture_section(RESULTS / "flow_proxy_mixture")
    if (RESULTS / "time_to_accuracy").exists():
        out += front_section(RESULTS / "time_to_accuracy")
    return "\n".join(out).rstrip() + "\n"


def update_readme() -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    dev = RESULTS / "dev" / "benchmark.csv"
    table = "\n".join(summary_table(dev.parent)) if dev.exists() else "(no results yet)"
    block = f"<!-- results:start -->\n{table}\n<!-- results:end -->"
    text = re.sub(r"<!-- results:start -->.*?<!-- results:end -->", block, text, flags=re.S)
    path.write_text(text)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    import shutil

    shutil.rmtree(FIGURES, ignore_errors=True)  # a figure no section draws any more goes
    (ROOT / "docs" / "results.md").write_text(page())
    update_readme()


if __name__ == "__main__":
    main()
