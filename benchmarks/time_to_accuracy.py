r"""Accuracy against compute: at every budget of wall time, which method gives the lower C2ST?

For each (task, N, seed, method) unit: simulate N pairs (timed), train (timed), draw 10,000
samples at observation 1 (timed), and score C2ST (sbibm's MLP) at the observations asked.
One unit at a time, one torch thread; for times that compare across runs, run it alone on
the machine. Units are the benchmark's (:func:`jsbi.benchmark.run_unit`, without the
calibration columns), so a run resumes where it stopped, and ``--also`` reads the units a
benchmark grid already finished (timed in that grid's conditions).

Then, per task, the front of each method: the lowest C2ST reached at a total time (the
simulation's recorded cost, plus 0.1 s or 1 s per simulation for an expensive simulator,
plus training and sampling) of at most t, and at every t where a method has a point,
which method leads. A method's point at N is the mean over the seeds run (time and C2ST),
so a second seed does not let the front pick the luckier one. Writes ``rows/`` (one CSV
per unit), ``front.csv``, ``front.md`` and ``front_<task>.png`` into ``--out``, from the
units asked for; ``--summarise`` writes them from the finished units alone (training
none, naming the missing). ``front.md`` also gives, where the default's front trails sbi
NPE's, the crossing point; at each budget, the paired differences of each jsbi method's
C2ST to sbi NPE's and jsbi npe's on the same simulations (accuracy per simulation); and
the default's training time over jsbi npe's per unit with what it returned (43's cost
targets).

Usage:
    python benchmarks/time_to_accuracy.py --tasks two_moons,slcp \
        --num-simulations 500,1000,2000,5000,10000 --seeds 0 \
        --out benchmarks/results/time_to_accuracy --also benchmarks/results/dev
    python benchmarks/time_to_accuracy.py --tasks two_moons,slcp \
        --num-simulations 500,1000,2000,5000,10000 --seeds 0 \
        --out benchmarks/results/time_to_accuracy --summarise
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from jsbi.benchmark import BASELINE, DEFAULT, REFERENCE, run_unit, write_rows

METHODS = (DEFAULT, REFERENCE, BASELINE)
#: Each method's colour in the figures (the default's variants after the three).
COLORS = {"jeffreys": "C0", "npe": "C1", "sbi-npe": "C2", "jeffreys-nophase2": "C3"}
#: Seconds per simulation added to the recorded cost: free, cheap, expensive simulators.
SIM_COSTS = (0.0, 0.1, 1.0)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def units(args: argparse.Namespace) -> list[dict]:
    from jsbi.benchmark import _finished_rows, _unit_name

    rows, missing = [], []
    observations = _ints(args.observations)
    for task in args.tasks.split(","):
        for n in _ints(args.num_simulations):
            for seed in _ints(args.seeds):
                for method in args.methods.split(","):
                    # A unit another run finished (--also: the benchmark grid's folder,
                    # same simulations, seed and protocol) is read, not trained again;
                    # with --summarise, so is this run's, and an unfinished one is left out.
                    name = _unit_name(task, n, seed, method)
                    done = [a / "rows" / f"{name}.csv" for a in args.also]
                    done = [d for d in done if d.exists()]
                    if done:
                        got = _finished_rows(done[0], observations)
                    elif args.summarise:
                        got = _finished_rows(args.out / "rows" / f"{name}.csv", observations)
                    else:
                        got = run_unit(
                            task,
                            n,
                            seed,
                            method,
                            observations=observations,
                            out=args.out,
                            calibration_pairs=0,
                            c2st_jobs=args.c2st_jobs,
                        )
                    if got is None:
                        missing.append(name)
                        continue
                    rows += [r | {"num_simulations": int(r["num_simulations"])} for r in got]
    if missing:
        print(f"not finished (left out): {', '.join(missing)}", flush=True)
    return rows


def by_unit(rows: list[dict]) -> dict[tuple, list[dict]]:
    r"""The rows of each unit (one per observation), by (task, N, seed, method)."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault((r["task"], r["num_simulations"], r["seed"], r["method"]), []).append(r)
    return by


def points(rows: list[dict], sim_cost: float) -> dict[tuple[str, str], list[tuple]]:
    # (task, method) -> [(total seconds, mean C2ST, N)], one point per N: the means over
    # its seeds' units (each unit's C2ST the mean over its observations).
    per_n: dict[tuple, list[tuple[float, float]]] = {}
    for (task, n, _, method), rs in sorted(by_unit(rows).items()):
        r = rs[0]
        total = (
            float(r["simulation_seconds"])
            + sim_cost * n
            + float(r["train_seconds"])
            + float(r["sample_seconds"])
        )
        c2st = statistics.fmean(float(x["c2st"]) for x in rs)
        per_n.setdefault((task, method, n), []).append((total, c2st))
    out: dict[tuple[str, str], list[tuple]] = {}
    for (task, method, n), seeds in per_n.items():
        total, c2st = (statistics.fmean(v) for v in zip(*seeds, strict=True))
        out.setdefault((task, method), []).append((total, c2st, n))
    return out


def front(pts: list[tuple], t: float) -> float:
    r"""The lowest C2ST a method reached within total time ``t`` (inf: none yet)."""
    return min((c for s, c, _ in pts if s <= t), default=math.inf)


def leaders(rows: list[dict], sim_cost: float) -> list[dict]:
    # At each method's points, every method's front: who leads at that budget.
    pts = points(rows, sim_cost)
    out = []
    for task in sorted({t for t, _ in pts}):
        methods = sorted(m for t, m in pts if t == task)
        times = sorted({s for m in methods for s, _, _ in pts[task, m]})
        for t in times:
            fronts = {m: front(pts[task, m], t) for m in methods}
            reached = {m: v for m, v in fronts.items() if math.isfinite(v)}
            out.append(
                {
                    "task": task,
                    "sim_cost": sim_cost,
                    "seconds": round(t, 1),
                    **{m: (round(v, 3) if math.isfinite(v) else "") for m, v in fronts.items()},
                    "leader": min(reached, key=reached.get) if reached else "",
                }
            )
    return out


def dominance(rows: list[dict], sim_cost: float, method: str, rival: str) -> str:
    # Whether method's front is at most rival's + 0.01 at every time where both have one;
    # where not, the worst gap and the crossing point: the time from which on it stays
    # within 0.01 (or that it still trails at the last time).
    pts = points(rows, sim_cost)
    worst = []
    for task in sorted({t for t, _ in pts}):
        if (task, method) not in pts or (task, rival) not in pts:
            continue
        times = sorted({s for m in (method, rival) for s, _, _ in pts[task, m]})
        gaps = [
            (front(pts[task, method], t) - front(pts[task, rival], t), t)
            for t in times
            if math.isfinite(front(pts[task, method], t))
            and math.isfinite(front(pts[task, rival], t))
        ]
        if gaps:
            gap, t = max(gaps)
            verdict = "dominates" if gap <= 0.01 else f"trails by {gap:.3f} at {t:.0f} s"
            if gap > 0.01:
                last = max(s for g, s in gaps if g > 0.01)
                after = [s for _, s in gaps if s > last]
                verdict += (
                    f", within 0.01 from {min(after):.0f} s on"
                    if after
                    else f", still at its last time ({last:.0f} s)"
                )
            worst.append(f"{task}: {verdict}")
    return "; ".join(worst)


def symmetric_methods(rows: list[dict]) -> list[str]:
    r"""The jsbi methods in ``rows`` other than npe, the default first."""
    found = {r["method"] for r in rows} - {REFERENCE, BASELINE}
    return sorted(found, key=lambda m: (m != DEFAULT, m))


def cost_table(rows: list[dict]) -> list[str]:
    # 43's cost targets from the same units: the default's (and each variant's) training
    # time over jsbi npe's at each (task, N, seed) where both ran, what it returned (at
    # most 1.3x where it returned npe's flow), and the median over them (at most 2.0x).
    unit_rows = by_unit(rows)
    methods = symmetric_methods(rows)
    lines = [
        "| task | N | seed | method | training time / jsbi npe's | returned | phase 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios: dict[str, list[float]] = {}
    for task, n, seed in sorted({key[:3] for key in unit_rows}):
        npe = unit_rows.get((task, n, seed, REFERENCE))
        for method in methods:
            if npe is None or (task, n, seed, method) not in unit_rows:
                continue
            r = unit_rows[task, n, seed, method][0]
            ratio = float(r["train_seconds"]) / float(npe[0]["train_seconds"])
            ratios.setdefault(method, []).append(ratio)
            lines.append(
                f"| {task} | {n} | {seed} | {method} | {ratio:.2f}x | "
                f"{r.get('returned') or '-'} | {r.get('phase2') or '-'} |"
            )
    if not ratios:
        return []
    medians = [
        f"{m}{' (the default)' if m == DEFAULT else ''} {statistics.median(ratios[m]):.2f}x "
        f"over {len(ratios[m])} unit{'s' if len(ratios[m]) > 1 else ''}"
        for m in methods
        if m in ratios
    ]
    return [*lines, "", f"Median: {'; '.join(medians)}."]


def same_budget_table(rows: list[dict]) -> list[str]:
    # Accuracy per simulation: at each (task, N), each jsbi method's C2ST and its paired
    # differences to sbi NPE and jsbi npe over the (seed, observation) pairs both scored
    # (the same simulations), mean ± standard error; negative favours the jsbi method.
    c2st: dict[tuple, dict[tuple, float]] = {}
    for r in rows:
        cell = c2st.setdefault((r["task"], r["num_simulations"], r["method"]), {})
        cell[r["seed"], r["observation"]] = float(r["c2st"])
    lines = [
        "| task | N | method | seeds | C2ST (mean ± sd) | − sbi NPE (paired) "
        "| − jsbi npe (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, n in sorted({key[:2] for key in c2st}):
        for method in symmetric_methods(rows):
            mine = c2st.get((task, n, method))
            if not mine:
                continue
            cols = []
            for rival in (BASELINE, REFERENCE):
                theirs = c2st.get((task, n, rival), {})
                diffs = [v - theirs[k] for k, v in mine.items() if k in theirs]
                cols.append(
                    f"{statistics.fmean(diffs):+.3f} ± "
                    f"{statistics.stdev(diffs) / math.sqrt(len(diffs)):.3f}"
                    if len(diffs) > 1
                    else "-"
                )
            values = list(mine.values())
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            seeds = len({seed for seed, _ in mine})
            lines.append(
                f"| {task} | {n} | {method} | {seeds} | {statistics.fmean(values):.3f} ± "
                f"{sd:.3f} | {cols[0]} | {cols[1]} |"
            )
    return lines


def unit_table(rows: list[dict]) -> list[str]:
    # One line per unit: its C2ST and the times the front adds up (seconds).
    lines = [
        "| task | N | seed | method | returned | C2ST (mean ± sd over observations) | "
        "simulation s | training s | 10,000 samples s | epochs | code |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, n, seed, method), rs in sorted(by_unit(rows).items()):
        c = [float(x["c2st"]) for x in rs]
        sd = statistics.stdev(c) if len(c) > 1 else 0.0
        r = rs[0]
        lines.append(
            f"| {task} | {n} | {seed} | {method} | {r.get('returned') or '-'} | "
            f"{statistics.fmean(c):.3f} ± {sd:.3f} | {float(r['simulation_seconds']):.1f} | "
            f"{float(r['train_seconds']):.1f} | {float(r['sample_seconds']):.2f} | "
            f"{r.get('epochs', '')} | {r.get('code') or 'unrecorded'} |"
        )
    return lines


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task in sorted({r["task"] for r in rows}):
        fig, axes = plt.subplots(1, len(SIM_COSTS) + 1, figsize=(4 * (len(SIM_COSTS) + 1), 3.4))
        for ax, cost in zip(axes, SIM_COSTS, strict=False):
            pts = points(rows, cost)
            for (t, m), p in sorted(pts.items()):
                if t != task:
                    continue
                p = sorted(p)
                ax.plot(
                    [s for s, _, _ in p], [c for _, c, _ in p], "o-", color=COLORS.get(m), label=m
                )
            ax.set_xscale("log")
            ax.set_xlabel(f"total seconds ({cost:g} s per simulation added)")
            ax.set_ylabel("C2ST (MLP)")
        pts = points(rows, 0.0)
        for (t, m), p in sorted(pts.items()):
            if t == task:
                p = sorted(p, key=lambda v: v[2])
                axes[-1].plot(
                    [n for _, _, n in p], [c for _, c, _ in p], "o-", color=COLORS.get(m), label=m
                )
        axes[-1].set_xscale("log")
        axes[-1].set_xlabel("simulations")
        axes[-1].legend(fontsize=7)
        fig.suptitle(task)
        fig.tight_layout()
        fig.savefig(out / f"front_{task}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="two_moons,gaussian_mixture,slcp,gaussian_linear_uniform")
    p.add_argument("--num-simulations", default="500,1000,2000,5000,10000,20000")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--observations", default="1,2,3,4,5")
    p.add_argument("--out", type=Path, default=Path("time-to-accuracy-out"))
    p.add_argument(
        "--c2st-jobs",
        type=int,
        default=1,
        help="processes for each C2ST's folds (after the timed work: the times do not change)",
    )
    p.add_argument(
        "--summarise",
        action="store_true",
        help="write the front from the finished units in --out alone (train none)",
    )
    p.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="a benchmark folder whose finished units (DIR/rows) are read, not trained again",
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = units(args)
    table = [row for cost in SIM_COSTS for row in leaders(rows, cost)]
    keys = sorted(
        {k for r in table for k in r}, key=lambda k: (k not in ("task", "sim_cost", "seconds"), k)
    )
    write_rows(args.out / "front.csv", [{k: r.get(k, "") for k in keys} for r in table])
    methods = symmetric_methods(rows)
    names = [f"{m} (the default)" if m == DEFAULT else m for m in methods]
    lines = [
        "| simulation cost | "
        + " | ".join(f"{m} against sbi NPE (front, within 0.01)" for m in names)
        + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    lines += [
        f"| {c:g} s | " + " | ".join(dominance(rows, c, m, BASELINE) for m in methods) + " |"
        for c in SIM_COSTS
    ]
    lines += ["", *same_budget_table(rows), "", *unit_table(rows)]
    if cost := cost_table(rows):
        lines += ["", *cost]
    (args.out / "front.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
