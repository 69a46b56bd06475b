r"""Accuracy against references: C2ST, NLTP and leakage.

* :func:`c2st` is the classifier two-sample test with sbibm's definition: an MLP with
  two hidden layers of ``10 * dim`` ReLU units (adam, up to 10,000 iterations, no early
  stopping), 5-fold cross-validated accuracy, both sample sets z-scored by the
  reference's mean and standard deviation. 0.5 means indistinguishable, 1 separable.
  It runs through ``sbi.utils.metrics.c2st`` with sbibm's classifier settings (sbi's
  own ``"mlp"`` defaults differ: 1,000 iterations and early stopping).
  ``classifier="rf"`` is sbi's default instead, a random forest, which NPE-PF, Simformer
  and NPSE report; its numbers read lower than the MLP's, so compare each with its own
  kind.
* :func:`nltp` is the mean negative log density of held-out true parameters,
  ``E[-log q(theta* | x*)]``: it upper-bounds the expected posterior entropy by the
  expected KL and needs no reference posterior.
* :func:`leakage` is the fraction of posterior mass outside the prior's support.

References:
    | Revisiting Classifier Two-Sample Tests (Lopez-Paz & Oquab, 2017)
    | https://arxiv.org/abs/1610.06545

    | Benchmarking Simulation-Based Inference (Lueckmann et al., 2021)
    | https://arxiv.org/abs/2101.04653
"""

from __future__ import annotations

__all__ = ["NLTPResult", "c2st", "leakage", "nltp"]

import warnings
from dataclasses import dataclass
from typing import Any

import joblib
import torch
from torch import Tensor
from torch.distributions import Distribution

from jsbi.diagnostics.sbc import log_prob_batched
from jsbi.diagnostics.utils import MetricRows, PosteriorLike, accepted_kwargs, check_pairs, seeded
from jsbi.progress import processes

#: C2ST's classifiers, each with its name in words: sbi's random forest and sbibm's MLP.
C2ST_CLASSIFIERS = {"rf": "random forest", "mlp": "sbibm's MLP"}


def check_classifier(classifier: str, argument: str = "classifier") -> None:
    r"""Raises a ``ValueError`` naming ``argument`` unless ``classifier`` is one of
    :data:`C2ST_CLASSIFIERS`."""
    if classifier not in C2ST_CLASSIFIERS:
        raise ValueError(
            f"{argument} must be one of {tuple(C2ST_CLASSIFIERS)}, got {classifier!r}"
        )


def c2st(
    samples: Tensor,
    reference: Tensor,
    *,
    seed: int = 1,
    n_folds: int = 5,
    z_score: bool = True,
    classifier: str = "mlp",
    n_jobs: int | None = 1,
) -> float:
    r"""Classifier two-sample test accuracy between samples and reference samples.

    Arguments:
        samples: Samples to check, shape ``(n, d)``.
        reference: Reference posterior samples, shape ``(n', d)``; its statistics
            z-score both sets.
        seed: Seeds the classifier and the folds.
        n_folds: Cross-validation folds.
        z_score: Whether to z-score by the reference's statistics.
        classifier: ``"mlp"`` (sbibm's definition) or ``"rf"`` (sbi's default, a random
            forest).
        n_jobs: Processes that fit the folds side by side (``-1``: every core); each
            fold's classifier is seeded alike, so the score does not depend on it.

    Returns:
        The mean cross-validated accuracy, in ``[0, 1]``; 0.5 is perfect.

    Example:
        >>> score = c2st(posterior.sample((1000,), x=x_o), task.reference_samples(1, 1000))
        >>> 0.0 <= score <= 1.0                          # sbibm uses 10,000 samples each
        True
    """
    from sbi.utils.metrics import c2st as sbi_c2st

    check_classifier(classifier)

    # On the CPU, whatever device the posterior sampled on (the classifier is sklearn's).
    samples = torch.as_tensor(samples, dtype=torch.float32).detach().cpu()
    reference = torch.as_tensor(reference, dtype=torch.float32).detach().cpu()
    if samples.ndim != 2 or reference.ndim != 2 or samples.shape[1] != reference.shape[1]:
        raise ValueError(
            "samples and reference must have shapes (n, d) and (n', d) with the same d, got "
            f"{tuple(samples.shape)} and {tuple(reference.shape)}"
        )
    if not (torch.isfinite(samples).all() and torch.isfinite(reference).all()):
        raise ValueError("samples and reference must be finite")
    dim = samples.shape[1]
    classifier_kwargs = {
        "activation": "relu",
        "hidden_layer_sizes": (10 * dim, 10 * dim),
        "max_iter": 10_000,
        "solver": "adam",
    }
    if classifier == "rf":
        classifier_kwargs = None  # sbi's random forest, as it is
    processes(n_jobs)  # checked
    # sbi's c2st leaves sklearn's cross_val_score at n_jobs=None, which takes joblib's
    # configured default: the folds run in that many processes.
    with warnings.catch_warnings(), joblib.parallel_config(n_jobs=n_jobs):
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning on tiny sets
        score = sbi_c2st(
            reference,
            samples,
            seed=seed,
            n_folds=n_folds,
            classifier=classifier,
            classifier_kwargs=classifier_kwargs,
            z_score=z_score,
        )
    return float(score)


@dataclass
class NLTPResult(MetricRows):
    r"""Negative log probability of true parameters.

    Attributes:
        mean: ``mean_i -log q(theta*_i | x*_i)`` (infinite if some truth has density 0).
        stderr: Its Monte Carlo standard error.
        values: Per-pair values, shape ``(N,)``.
    """

    mean: float
    stderr: float
    values: Tensor

    def to_dict(self) -> dict[str, Any]:
        return {"nltp": self.mean, "nltp_stderr": self.stderr}


def nltp(
    posterior: PosteriorLike,
    theta: Tensor,
    x: Tensor,
    *,
    batch_size: int = 1000,
    num_leakage_samples: int = 1000,
) -> NLTPResult:
    r"""Mean negative log density of held-out true parameters under the posterior.

    Evaluated with ``log_prob_batched`` on ``theta[None]`` (shape ``(1, N, d)``), one
    call per ``batch_size`` pairs; sbi posteriors are renormalised for leakage.

    Arguments:
        posterior: Any posterior with ``log_prob_batched``.
        theta: True parameters, shape ``(N, d)``.
        x: Their simulations, shape ``(N, m)``.
        batch_size: Pairs per call.
        num_leakage_samples: Samples per observation for sbi's leakage correction.

    Returns:
        An :class:`NLTPResult`.

    Example:
        >>> result = nltp(posterior, theta_test, x_test)
        >>> result.values.shape, result.stderr > 0
        (torch.Size([200]), True)
    """
    theta, x = check_pairs(theta, x)
    lp = log_prob_batched(
        posterior,
        theta[None],
        x,
        batch_size=batch_size,
        normalize=True,
        num_leakage_samples=num_leakage_samples,
    )[0]
    values = -lp.double()
    n = values.numel()
    mean = float(values.mean())
    stderr = float(values.std() / n**0.5) if n > 1 and torch.isfinite(values).all() else 0.0
    return NLTPResult(mean=mean, stderr=stderr, values=values.float())


def _in_support(prior: Distribution, theta: Tensor) -> Tensor:
    from jsbi.flows.support import Support

    return Support.from_prior(prior, theta.shape[-1]).cpu().contains(theta.cpu())


@torch.no_grad()
def _own_leakage(posterior: Any, x: Tensor, num_samples: int) -> float:
    # A jsbi posterior's leakage at one x; all of it where none of the flow's draws fell
    # inside the support (its accepted mass cannot normalise it there).
    from jsbi.posteriors.posterior import UnnormalisableError

    try:
        return float(posterior.leakage(x, num_samples))
    except UnnormalisableError:
        return 1.0


def leakage(
    posterior: PosteriorLike,
    x: Tensor,
    prior: Distribution,
    num_samples: int = 1000,
    *,
    batch_size: int = 100,
    seed: int | None = 0,
) -> Tensor:
    r"""Fraction of posterior mass outside the prior's support, per observation.

    Samples are drawn without rejection (``reject_outside_prior=False`` where the
    posterior takes it, as sbi's do), so the leaking mass is seen. A jsbi posterior
    answers with its own :meth:`~jsbi.posteriors.Posterior.leakage` instead, against its
    own prior (seeded and cached there): its flow's draws, and zero for the likelihood
    proxy without a sampler run (its density is zero outside the prior) except where the
    flow answers for it.

    Arguments:
        posterior: Any posterior with ``sample_batched``.
        x: Observations, shape ``(B, m)``.
        prior: The prior, a torch distribution with a ``support``.
        num_samples: Samples per observation.
        batch_size: Observations per call.
        seed: Seeds the sampling.

    Returns:
        The fractions, shape ``(B,)``, in ``[0, 1]``.

    Example:
        >>> fraction = leakage(posterior, task.observation(1), task.prior)
        >>> fraction.shape, bool(0 <= fraction.item() <= 1)
        (torch.Size([1]), True)
    """
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (B, m), got {tuple(x.shape)}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    from jsbi.posteriors import Posterior

    if isinstance(posterior, Posterior):
        return torch.tensor([_own_leakage(posterior, row, num_samples) for row in x])
    out = []
    with seeded(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi warns about samples outside the prior
        for xb in x.split(batch_size):
            kwargs = accepted_kwargs(
                posterior.sample_batched, show_progress_bars=False, reject_outside_prior=False
            )
            s = posterior.sample_batched((num_samples,), x=xb, **kwargs)
            inside = _in_support(prior, s.reshape(-1, s.shape[-1]).cpu()).reshape(s.shape[:-1])
            out.append(1.0 - inside.float().mean(dim=0))
    return torch.cat(out)
