r"""The likelihood proxy as the returned posterior, against the flow and sbi's NPE.

For each task, simulation budget and seed, the script simulates once and trains on exactly
those pairs, with the same seed: sbi's ``NPE`` (zuko NSF), jsbi ``npe``, and jsbi
``jeffreys`` (the default: likelihood proxy, ``npe-first``, the gate) with
``posterior="auto"``. From the one ``jeffreys`` run it scores three posteriors on each
observation: the flow (``jsbi-jeffreys-flow``), the proxy sampled by importance resampling
from the flow (``jsbi-jeffreys-proxy``, whatever the validation pairs say) and the one
``posterior="auto"`` returned (``jsbi-jeffreys-auto``: the proxy only where it is the
better model on the validation pairs, by the estimator's rule, ``_proxy_wins``). C2ST is
sbibm's definition (:func:`jsbi.diagnostics.c2st.c2st`).

Each row also records what ``auto`` chose (``posterior``), the measurement it chose on
(``proxy_minus_flow`` ± ``proxy_minus_flow_se``, ``proxy_ess``: validation pairs, 256
importance samples each), which phase of ``npe-first`` won (``best_phase``) and, for the
proxy, the ESS of the importance resampling on that observation (``sample_ess``) and the
proposal draws per sample (``candidates``: the proxy row uses auto's count; up to
``max_candidates`` per sample where the ESS is short of the samples asked). The
table is :func:`npe_parity.table`'s: mean ± sd over observations and seeds, the paired
difference to sbi NPE, training time over sbi's (``jsbi-jeffreys-*`` share one run's
time).

Development set only (tune here): ``two_moons``, ``gaussian_mixture``, ``slcp``,
``gaussian_linear_uniform`` with observations 1-5.

Example:
    $ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/proxy_posterior.py --tasks two_moons \
        --num-simulations 10000 --seeds 0 --num-samples 2000 \
        --csv benchmarks/results/proxy_posterior/two_moons.csv
    $ .venv/bin/python benchmarks/proxy_posterior.py \
        --table benchmarks/results/proxy_posterior/*.csv
    $ .venv/bin/python benchmarks/proxy_posterior.py \
        --choices benchmarks/results/proxy_posterior/*.csv   # per cell, today's rule
    $ .venv/bin/python benchmarks/proxy_posterior.py --tasks two_moons --num-simulations 300 \
        --seeds 0 --observations 1 --max-epochs 3 --num-samples 200      # a smoke test
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from jsbi.inference.estimator import _candidates_per_sample, _proxy_wins
from npe_parity import _fit_options, _mse, _read_rows, add_cell_args, run_cells, score, table
from objectives import _value

import jsbi
from jsbi.flows.support import Support
from jsbi.pipeline import SBI_NPE, train_method
from jsbi.posteriors.posterior import Posterior
from jsbi.posteriors.proxy import ProxyPosterior
from jsbi.seeding import seeded

#: The methods scored per cell (the last three from one jeffreys run).
METHODS = (
    SBI_NPE,
    "jsbi-npe",
    "jsbi-jeffreys-flow",
    "jsbi-jeffreys-proxy",
    "jsbi-jeffreys-auto",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_cell_args(p, seeds=[0], num_samples=2000)
    p.add_argument(
        "--jeffreys",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="options of the jeffreys run only, e.g. passes=2 (a coupling flow); recorded "
        "in the rows' jeffreys_options column, and a CSV holding rows of other options "
        "is refused",
    )
    p.add_argument(
        "--choices",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="per cell: the validation measurement, what posterior='auto' returns under "
        "the estimator's current rule (the flow's or the proxy's rows of the same run) "
        "and its paired C2ST difference to sbi NPE and to the flow; nothing trained",
    )
    args = p.parse_args(argv)
    args.jeffreys_options = {}
    for item in args.jeffreys:
        key, sep, value = item.partition("=")
        if not (sep and key):
            p.error(f"--jeffreys takes KEY=VALUE items, got {item!r}")
        args.jeffreys_options[key] = _value(value)
    return args


def _options_text(options: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(options.items()))


def choices(rows: list[dict]) -> str:
    r"""Per (task, budget, seed): what ``posterior="auto"`` returns under the estimator's
    current rule (:func:`jsbi.inference.estimator._proxy_wins`) given the recorded
    measurement, its mean C2ST, and the paired differences (± se over observations) to sbi
    NPE and to the flow; the training time of jeffreys over npe's. Exact where the rule
    resamples the proxy from as many candidates per sample as the recorded proxy rows
    (the ``candidates`` column; rows written before it used 10)."""
    cells: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in rows:
        key = (r["task"], r["num_simulations"], r["seed"])
        cells.setdefault(key, {}).setdefault(r["method"], {})[r["observation"]] = r
    head = (
        f"{'task':<24} {'N':>6} {'seed':>4} {'proxy - flow':>15} {'ESS':>5} {'returns':>7} "
        f"{'C2ST':>6} {'sbi':>6} {'flow':>6} {'minus sbi':>15} {'minus flow':>15} "
        f"{'t/t_npe':>7} {'exact':>5}"
    )
    lines = [head, "-" * len(head)]
    for (task, n, seed), by in sorted(cells.items()):
        obs = sorted(by[SBI_NPE])
        first = by["jsbi-jeffreys-auto"][obs[0]]
        measured = {
            k: float(first[k]) for k in ("proxy_minus_flow", "proxy_minus_flow_se", "proxy_ess")
        }
        chosen = "proxy" if _proxy_wins(measured) else "flow"
        recorded = int(by["jsbi-jeffreys-proxy"][obs[0]].get("candidates") or 10)
        exact = chosen == "flow" or _candidates_per_sample(measured) == recorded

        mine, sbi, flow = (
            [float(by[m][o]["c2st"]) for o in obs]
            for m in (f"jsbi-jeffreys-{chosen}", SBI_NPE, "jsbi-jeffreys-flow")
        )
        ratio = float(first["train_time_s"]) / float(by["jsbi-npe"][obs[0]]["train_time_s"])
        lines.append(
            f"{task:<24} {n:>6} {seed:>4} "
            f"{measured['proxy_minus_flow']:+7.3f} ± {measured['proxy_minus_flow_se']:.3f} "
            f"{measured['proxy_ess']:5.3f} {chosen:>7} {statistics.fmean(mine):6.3f} "
            f"{statistics.fmean(sbi):6.3f} {statistics.fmean(flow):6.3f} "
            f"{_mse([a - b for a, b in zip(mine, sbi, strict=True)]):>15} "
            f"{_mse([a - b for a, b in zip(mine, flow, strict=True)]):>15} {ratio:7.2f} "
            f"{'yes' if exact else 'no':>5}"
        )
    return "\n".join(lines)


def _posteriors(trained) -> dict[str, object]:
    # The flow, the proxy (resampled from as many candidates as auto's would be) and
    # auto's choice, all from the one jeffreys run.
    est = trained.estimator
    history = trained.history
    candidates = _candidates_per_sample(history.get("final_proxy"))
    return {
        "jsbi-jeffreys-flow": Posterior(est.flow, est.prior, history=history),
        "jsbi-jeffreys-proxy": ProxyPosterior(
            est.flow, est.step.proxy, est.prior, candidates_per_sample=candidates, history=history
        ),
        "jsbi-jeffreys-auto": trained.posterior,
    }


def _cell(task_name: str, n_sim: int, seed: int, args: argparse.Namespace) -> list[dict]:
    r"""Simulates once, trains the three runs on those pairs and scores each observation."""
    task = jsbi.get_task(task_name)
    theta, x = jsbi.simulate(task, n_sim, seed=seed)
    fit = _fit_options(args)
    runs = {
        SBI_NPE: train_method(SBI_NPE, task.prior, theta, x, seed=seed, fit_options=fit),
        "jsbi-npe": train_method("npe", task.prior, theta, x, seed=seed, fit_options=fit),
        "jeffreys": train_method(
            "jeffreys",
            task.prior,
            theta,
            x,
            seed=seed,
            estimator_options={"posterior": "auto", **args.jeffreys_options},
            fit_options=fit,
        ),
    }
    jeffreys = runs.pop("jeffreys")
    posteriors = {m: (r.posterior, r.seconds, r.epochs) for m, r in runs.items()}
    for m, post in _posteriors(jeffreys).items():
        posteriors[m] = (post, jeffreys.seconds, jeffreys.epochs)
    measured = jeffreys.history.get("final_proxy") or {}
    chosen = jeffreys.history.get("posterior", "flow")
    print(
        f"{task_name} N={n_sim} seed={seed}: auto chose the {chosen} "
        f"(validation proxy - flow {measured.get('proxy_minus_flow', math.nan):+.3f} ± "
        f"{measured.get('proxy_minus_flow_se', math.nan):.3f}, ESS fraction "
        f"{measured.get('proxy_ess', math.nan):.3f}); best phase "
        f"{jeffreys.history.get('best_phase')}; train s: "
        + ", ".join(f"{m} {r.seconds:.0f}" for m, r in (*runs.items(), ("jeffreys", jeffreys))),
        flush=True,
    )
    t_sbi = runs[SBI_NPE].seconds
    support = Support.from_prior(task.prior)
    rows = []
    for obs in args.observations:
        x_o = task.observation(obs)
        # Analytic references are drawn from torch's random state: seeded, so that a rerun
        # scores against the same samples.
        with seeded(seed):
            ref = task.reference_samples(obs)[: args.num_samples]
        scores = []
        for method in METHODS:
            posterior, t, epochs = posteriors[method]
            key = {"task": task_name, "num_simulations": n_sim, "seed": seed, "observation": obs}
            row = score(key, method, posterior, t, epochs, t_sbi, x_o, ref, support)
            ess = getattr(posterior, "last_ess", None)
            rows.append(
                {
                    **row,
                    "posterior": chosen if method == "jsbi-jeffreys-auto" else "",
                    "proxy_minus_flow": measured.get("proxy_minus_flow", ""),
                    "proxy_minus_flow_se": measured.get("proxy_minus_flow_se", ""),
                    "proxy_ess": measured.get("proxy_ess", ""),
                    "best_phase": jeffreys.history.get("best_phase", ""),
                    "sample_ess": "" if ess is None else ess,
                    "candidates": getattr(posterior, "candidates_per_sample", ""),
                    "max_candidates": getattr(posterior, "max_candidates_per_sample", ""),
                    "jeffreys_options": _options_text(args.jeffreys_options),
                }
            )
            scores.append(f"{method} {rows[-1]['c2st']:.3f}")
        print(f"{task_name} N={n_sim} seed={seed} obs={obs}: " + ", ".join(scores), flush=True)
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    wanted = _options_text(args.jeffreys_options)
    held = {r.get("jeffreys_options") or "" for r in _read_rows(args.csv)}
    if held - {wanted}:
        raise SystemExit(
            f"{args.csv} holds jeffreys rows with options {sorted(held - {wanted})}, not "
            f"{wanted!r}: use another --csv"
        )
    return run_cells(args, METHODS, _cell)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.choices:
        print(choices([r for path in args.choices for r in _read_rows(path)]))
        return 0
    if args.table:
        rows = [r for path in args.table for r in _read_rows(path)]
        print(table(rows))
        return 0
    print(table(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
