r"""Tutorial 2: choosing and checking an objective.

On two_moons, a task with a known posterior: what the symmetric objective's proxy is,
whether it helps (its held-out fit against the flow's, the gate and the two phases in
the history), and how to check any posterior with SBC, expected coverage and TARP.

Run it with ``python docs/tutorials/choosing_objective.py --out tutorial-out/objective``
(``--settings small`` for the smallest run, which CI uses).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import jsbi  # noqa: E402
from jsbi.diagnostics import (  # noqa: E402
    c2st,
    check_sbc,
    expected_coverage,
    nltp,
    plot_coverage,
    plot_sbc_ecdf,
    plot_tarp,
    run_sbc,
    run_tarp,
)

SETTINGS = {
    # A laptop CPU in a few minutes.
    "full": {
        "num_simulations": 1000,
        "fit": {},
        "num_test": 300,
        "num_samples": 300,
        "num_c2st": 2000,
    },
    # CI: every step runs, with a short patience so that phase 2 starts.
    "small": {
        "num_simulations": 300,
        "fit": {"max_epochs": 150, "stop_after_epochs": 3},
        "num_test": 40,
        "num_samples": 50,
        "num_c2st": 200,
    },
}


def plot_phases(histories: dict[str, dict], path: Path) -> None:
    r"""Validation NLL of both runs, the gate's evidence (proxy minus flow NLL on the
    validation pairs, with two standard errors) and the gate itself, per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for name, h in histories.items():
        axes[0].plot(h["epoch"], h["validation_loss"], label=name)
    h = histories["jeffreys"]
    epoch = np.asarray(h["epoch"])
    phase2 = np.asarray(h["train_phase"]) == 2
    if phase2.any():
        for ax in axes:
            ax.axvspan(epoch[phase2].min() - 0.5, epoch.max() + 0.5, color="0.9", zorder=0)
    nan = [float("nan")] * len(epoch)  # no phase 2 (epoch cap): nothing measured
    diff = np.asarray(h.get("validation_proxy_minus_flow", nan), dtype=float)
    se = np.asarray(h.get("validation_proxy_minus_flow_se", nan), dtype=float)
    axes[1].plot(epoch, diff, color="C1")
    axes[1].fill_between(epoch, diff - 2 * se, diff + 2 * se, color="C1", alpha=0.3)
    axes[1].axhline(0.0, color="k", lw=0.8)
    gate = np.asarray(h.get("validation_gate", nan), dtype=float)
    axes[2].step(epoch, gate, where="mid", color="C1")
    axes[0].set(title="validation NLL of the flow", xlabel="epoch")
    axes[1].set(title="proxy NLL minus flow NLL", xlabel="epoch")
    axes[2].set(title="gate (reverse-term weight)", xlabel="epoch", ylim=(-0.05, 1.05))
    axes[0].legend()
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tutorial-out/choosing_objective")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="full")
    args = parser.parse_args(argv)
    cfg, out = SETTINGS[args.settings], Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    task = jsbi.get_task("two_moons")
    theta, x = jsbi.simulate(task, cfg["num_simulations"], seed=0)

    # --- 1. Two objectives on the same pairs ------------------------------------------
    # jeffreys' defaults: proxy="likelihood" (the prior times a conditional flow on x
    # given theta, fitted by maximum likelihood beside the posterior flow),
    # schedule="npe-first" (npe to its early stop, then forward KL + KL(q || proxy) from
    # npe's best state; the better state on the validation NLL is returned) and the gate
    # (the reverse term is on only while the proxy's validation NLL beats the flow's).
    posteriors, histories = {}, {}
    for objective in ("npe", "jeffreys"):
        estimator = jsbi.PosteriorEstimator(task.prior, objective=objective, seed=0)
        posterior = estimator.fit(theta, x, **cfg["fit"])
        posteriors[objective], histories[objective] = posterior, posterior.history

    # --- 2. Does the proxy know more than the flow? -----------------------------------
    h = histories["jeffreys"]
    start2 = h.get("phase2_start")
    if start2:
        print(
            "at phase 2's start, proxy NLL - flow NLL on the validation pairs: "
            f"{start2['proxy_minus_flow']:+.3f} ± {start2['proxy_minus_flow_se']:.3f} "
            f"(negative: the proxy is the better model), gate {start2['gate']:.2f}, "
            f"proxy ESS {start2['proxy_ess']:.2f}"
        )
    else:
        print("phase 1 never stopped early (epoch cap): no phase 2, jeffreys = npe")
    print(f"best phase: {h.get('best_phase')} (1: npe's state kept, 2: the symmetric phase won)")
    # posterior="auto" (jeffreys' default with the likelihood proxy): the proxy itself,
    # sampled by MCMC proposed by the flow, where it is clearly the better model
    # on the validation pairs, else the equal mixture of the flow and the proxy.
    final = h.get("final_proxy") or {}
    print(
        f"jeffreys returned the {h['posterior']} (after training, proxy NLL - flow NLL "
        f"{final.get('proxy_minus_flow', math.nan):+.3f} ± "
        f"{final.get('proxy_minus_flow_se', math.nan):.3f}, mixture NLL - flow NLL "
        f"{final.get('mixture_minus_flow', math.nan):+.3f} ± "
        f"{final.get('mixture_minus_flow_se', math.nan):.3f})"
    )
    plot_phases(histories, out / "phases.png")

    # --- 3. Check both on fresh pairs: NLTP, SBC, coverage, TARP ----------------------
    theta_t, x_t = jsbi.simulate(task, cfg["num_test"], seed=1)
    n = cfg["num_samples"]
    sbc, coverage, tarp, rows = {}, {}, {}, []
    for name, posterior in posteriors.items():
        ranks = run_sbc(posterior, theta_t, x_t, n, seed=0)
        sbc[name] = check_sbc(ranks, n, theta_names=task.theta_names)
        coverage[name] = expected_coverage(posterior, theta_t, x_t, n, seed=0)
        tarp[name] = run_tarp(posterior, theta_t, x_t, n, seed=0)
        score = nltp(posterior, theta_t, x_t)
        # C2ST against the task's reference posterior (0.5: indistinguishable).
        m = cfg["num_c2st"]
        torch.manual_seed(0)  # the same draws for the same flow
        samples = posterior.sample((m,), x=task.observation(1))
        accuracy = c2st(samples, task.reference_samples(1)[:m])
        rows.append((name, score, sbc[name], coverage[name], tarp[name], accuracy))

    fig, axes = plt.subplots(len(sbc), 2, figsize=(8, 3 * len(sbc)), squeeze=False)
    for row, (name, res) in zip(axes, sbc.items(), strict=True):
        plot_sbc_ecdf(res, axes=row, label=name)
    fig.tight_layout()
    fig.savefig(out / "sbc_ecdf.png", dpi=110)
    plt.close(fig)
    for what, plot in (("coverage", plot_coverage), ("tarp", plot_tarp)):
        ax = plot(coverage if what == "coverage" else tarp)
        ax.figure.savefig(out / f"{what}.png", dpi=110)
        plt.close(ax.figure)

    print(f"\n{'method':9s} {'NLTP':>15s} {'SBC':>12s} {'coverage':>15s} {'TARP ATC':>9s} C2ST")
    for name, score, s, c, t, acc in rows:
        band = "in band" if s.calibrated else "out of band"
        nll = f"{score.mean:7.3f} ± {score.stderr:5.3f}"
        print(f"{name:9s} {nll} {band:>12s} {c.verdict:>15s} {t.atc:+9.3f} {acc:.3f}")
    seconds = time.perf_counter() - start
    print(f"tutorial 2 ran in {seconds:.0f} s")
    assert all(math.isfinite(r[1].mean) for r in rows)
    return {"rows": rows, "best_phase": h.get("best_phase"), "seconds": seconds}


if __name__ == "__main__":
    main()
