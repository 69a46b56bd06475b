r"""Tutorial 3: scaling out.

One simulation campaign run four ways (in-process, joblib's process pool, a Dask
``LocalCluster`` and Ray where it is installed) giving the same pairs; a campaign and a
training run that crash and resume where they stopped; training on a GPU when one is
present.

Run it as a script (Dask's worker processes need the simulator to come from
``__main__`` or an importable module):
``python docs/tutorials/scaling_out.py --out tutorial-out/scaling`` (``--settings small``
for the smallest run, which CI uses).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Independent, Uniform  # noqa: E402

import jsbi  # noqa: E402

SETTINGS = {
    # A laptop CPU in a few minutes.
    "full": {"num_simulations": 5000, "batch_size": 250, "workers": 2, "max_epochs": 15},
    # CI: every step runs, on little data.
    "small": {"num_simulations": 400, "batch_size": 50, "workers": 2, "max_epochs": 6},
}
STEPS = 400
CRASH = {"after_calls": None}  # set to make the simulator fail, as a crashed job would


# --- The simulator: stochastic logistic growth, Euler-Maruyama in a numpy loop --------
def growth(theta: np.ndarray) -> np.ndarray:
    if CRASH["after_calls"] is not None:
        CRASH["after_calls"] -= 1
        if CRASH["after_calls"] < 0:
            raise RuntimeError("simulated crash (the job was killed)")
    rate, noise = theta
    n, dt, path = 0.05, 10.0 / STEPS, np.empty(STEPS)
    for t in range(STEPS):
        n += rate * n * (1.0 - n) * dt + noise * n * np.sqrt(dt) * np.random.normal()
        n = min(max(n, 1e-6), 10.0)
        path[t] = n
    # Five summary statistics of the path.
    return np.array([path[::80].mean(), path.mean(), path.std(), path[-50:].mean(), path.max()])


def simulator() -> jsbi.Simulator:
    prior = Independent(Uniform(torch.tensor([0.2, 0.01]), torch.tensor([2.0, 0.5])), 1)
    return jsbi.wrap(
        growth, prior, vectorized=False, numpy=True, name="growth", version="1",
        theta_names=["rate", "noise"],
    )  # fmt: skip


def campaign(sim, cfg, **kwargs):
    start = time.perf_counter()
    theta, x = jsbi.simulate(
        sim, cfg["num_simulations"], seed=0, batch_size=cfg["batch_size"], **kwargs
    )
    return theta, x, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tutorial-out/scaling_out")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="full")
    args = parser.parse_args(argv)
    cfg, out = SETTINGS[args.settings], Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sim, workers = simulator(), cfg["workers"]

    # --- 1. The same campaign, four ways: the pairs depend on (seed, batch_size) only ---
    theta, x, t_one = campaign(sim, cfg, n_jobs=1)
    seconds = {"in-process": t_one}
    _, x_loky, seconds[f"joblib, {workers} processes"] = campaign(sim, cfg, n_jobs=workers)

    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as lc:
        with Client(lc):
            _, x_dask, seconds[f"dask, {workers} workers"] = campaign(sim, cfg, backend="dask")
    same = {"joblib": torch.equal(x, x_loky), "dask": torch.equal(x, x_dask)}
    if importlib.util.find_spec("ray") is not None:
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            _, x_ray, seconds[f"ray, {workers} CPUs"] = campaign(sim, cfg, backend="ray")
            same["ray"] = torch.equal(x, x_ray)
        finally:
            ray.shutdown()
    else:
        print("ray is not installed (pip install 'jsbi[ray]'): skipped")
    for way, s in seconds.items():
        print(f"{way:22s} {s:6.1f} s")
    print(f"same pairs as in-process: {same}")

    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.barh(list(seconds), list(seconds.values()), color="C0")
    ax.set(xlabel="seconds", title=f"{cfg['num_simulations']} simulations")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "campaign_seconds.png", dpi=110)
    plt.close(fig)

    # --- 2. A campaign that crashes, then resumes from its store ----------------------
    store = out / "store"
    num_batches = cfg["num_simulations"] // cfg["batch_size"]
    CRASH["after_calls"] = (num_batches // 2) * cfg["batch_size"]  # halfway through
    try:
        campaign(sim, cfg, store=store)
    except RuntimeError as err:
        kept = len(list(store.glob("batch_*.pt")))
        print(f"campaign crashed ({err}); {kept} of {num_batches} batches are on disk")
    CRASH["after_calls"] = None
    _, x_s, _ = campaign(sim, cfg, store=store)
    print(f"resumed: same pairs as an uninterrupted campaign: {torch.equal(x_s, x)}")

    # --- 3. Training on the GPU when there is one; a crash, then a resume -------------
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"training on {device}")
    fit = {"max_epochs": cfg["max_epochs"], "show_progress_bar": False}

    def estimator():
        return jsbi.PosteriorEstimator(sim.prior, objective="npe", device=device, seed=0)

    whole = estimator().fit(theta, x, **fit)

    def crash_at_epoch_3(epoch, logs):
        if epoch == 3:
            raise RuntimeError("simulated crash at epoch 3")

    checkpoint = out / "training.ckpt"
    try:
        estimator().fit(theta, x, checkpoint=checkpoint, callback=crash_at_epoch_3, **fit)
    except RuntimeError as err:
        print(f"training crashed ({err}); checkpoint: {checkpoint.name}")
    epochs_run = []
    resumed = estimator().fit(
        theta, x, checkpoint=checkpoint, callback=lambda e, logs: epochs_run.append(e), **fit
    )
    same_loss = resumed.history["validation_loss"] == whole.history["validation_loss"]
    print(
        f"resumed at epoch {epochs_run[0]}; validation losses identical to an uninterrupted "
        f"run: {same_loss}"
    )
    x_o = x[:1]
    samples = resumed.sample((1000,), x=x_o)
    mean = ", ".join(f"{v:.3f}" for v in samples.mean(0).tolist())
    print(f"posterior mean at a training x: {mean} (samples on {samples.device})")
    total = time.perf_counter() - start
    print(f"tutorial 3 ran in {total:.0f} s")
    return {"same": same, "seconds": seconds, "resumed_at": epochs_run[0], "same_loss": same_loss}


if __name__ == "__main__":
    main()
