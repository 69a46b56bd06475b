r"""The misspecification check's evidence statistic: how many importance draws it needs,
and which reference.

For each task, trains jeffreys (seed 0), then for each number of draws S and each
reference builds the check's reference as a fit does (``fit_typicality``, the log evidence
with S draws each) and the p-values of ``--fresh`` new simulations of the true simulator
(seed 12345): as they are, shifted by one and three standard deviations of the training
``x``, and with Gaussian noise of one standard deviation added. References: ``held-out``
(the fit's validation ``x``), ``model`` (1,000 draws of the learned model's prior
predictive), ``embedding`` (the check without a likelihood proxy, npe's: the flow's
embedding of the simulations, S unused), ``combined`` (held-out, with the embedding
check as its partner: twice the smaller p-value). Records the reference's build time and, per set,
the share flagged (p < 0.01) and the median p-value. On the true simulator's draws a valid
check flags at most 1%.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/typicality_samples.py --tasks two_moons,slcp \
        --draws 256,64,32 --references model --fresh 200 \
        --out benchmarks/results/typicality/samples.csv
    OMP_NUM_THREADS=1 python benchmarks/typicality_samples.py --tasks two_moons,slcp \
        --draws 64 --references held-out,model --fresh 1000 \
        --out benchmarks/results/typicality/references.csv
    OMP_NUM_THREADS=1 python benchmarks/typicality_samples.py --tasks two_moons,slcp \
        --draws 64 --references embedding --fresh 1000 \
        --out benchmarks/results/typicality/embedding.csv
    OMP_NUM_THREADS=1 python benchmarks/typicality_samples.py --tasks two_moons,slcp \
        --draws 64 --references combined --fresh 1000 \
        --out benchmarks/results/typicality/combined.csv
"""

from __future__ import annotations

import time

import per_task
import torch

from jsbi.benchmark import _train
from jsbi.posteriors.typicality import THRESHOLD, fit_typicality
from jsbi.proxies.importance import proxy_log_normalizer
from jsbi.seeding import seeded
from jsbi.simulators import get_task, simulate
from jsbi.training.config import TrainConfig
from jsbi.training.data import split_indices

#: The reference each --references name builds (``embedding``: the check of a posterior
#: without a likelihood proxy, npe's, on the same fit's flow).
SOURCES = {"embedding": "simulations", "combined": "held-out"}


def _log_evidence(post, prior, x: torch.Tensor, draws: int) -> torch.Tensor:
    with seeded(0), torch.no_grad():
        log_z, _ = proxy_log_normalizer(post.proxy, post.flow, prior, x, draws)
    return log_z


def rows_for(
    task_name: str, n: int, draws: list[int], references: list[str], fresh: int
) -> list[dict]:
    task = get_task(task_name)
    theta, x = simulate(task, n, seed=0, show_progress_bar=False)
    post, _, _ = _train("jeffreys", task, theta, x, 0, 2**31 - 1, None, None)
    post.proxy.eval()
    val, _ = split_indices(len(x), TrainConfig().validation_fraction, 0)  # the fit's own
    held_out = {"held-out": x[val], "combined": x[val], "model": None}
    _, xt = simulate(task, fresh, seed=12345, show_progress_bar=False)
    sd = x.std(0)
    noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(1))
    sets = {
        "true": xt,
        "shift 1 sd": xt + sd,
        "shift 3 sd": xt + 3 * sd,
        "noise 1 sd": xt + sd * noise,
    }
    rows = []
    for s in draws:
        # Each set's statistics, once for every reference that reads them.
        with torch.no_grad():
            embedded = {name: post.flow.embed(xs) for name, xs in sets.items()}
            evidence = {
                name: _log_evidence(post, task.prior, xs, s)
                for name, xs in sets.items()
                if references != ["embedding"]
            }
        for reference in references:
            rows += _reference_rows(post, task, x, s, reference, held_out, embedded, evidence)
    return [{"task": task_name, "num_simulations": n, **row} for row in rows]


def _reference_rows(post, task, x, s, reference, held_out, embedded, evidence) -> list[dict]:
    # One reference's build time and, per set, the share flagged and the median p-value.
    start = time.perf_counter()
    proxy = None if reference == "embedding" else post.proxy  # (npe's check)
    ref = fit_typicality(
        post.flow,
        proxy,
        task.prior,
        x,
        draws=s,
        held_out=held_out.get(reference),
        combine=reference == "combined",
    )
    seconds = time.perf_counter() - start
    assert ref.source == SOURCES.get(reference, reference), (ref.source, reference)
    rows = []
    for name, emb in embedded.items():
        stats = emb if proxy is None else evidence[name]
        p = torch.tensor([ref.p_value_of(v, e) for v, e in zip(stats, emb, strict=True)])
        row = {"draws": s, "reference": reference, "reference_size": len(ref.reference)}
        row |= {"set": name, "reference_seconds": round(seconds, 2)}
        row |= {"flagged": float((p < THRESHOLD).float().mean())}
        rows.append(row | {"median_p": float(p.median())})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = per_task.parser(__doc__, "two_moons,slcp", "typicality_samples.csv")
    p.add_argument("--draws", default="64")
    p.add_argument("--references", default="held-out,model")
    p.add_argument("--fresh", type=int, default=1000, help="new simulations per set")

    def rows(task: str, args) -> list[dict]:
        draws = [int(v) for v in args.draws.split(",")]
        return rows_for(task, args.num_simulations, draws, args.references.split(","), args.fresh)

    per_task.run(p, rows)


if __name__ == "__main__":
    main()
