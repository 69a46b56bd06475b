r"""Loading a saved posterior: :func:`load_posterior`, for the flow's, the proxy's and
their mixture's.

Example:
    >>> posterior.save("posterior.pt")                     # doctest: +SKIP
    >>> same = load_posterior("posterior.pt")              # doctest: +SKIP
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
from torch.distributions import Distribution

from jsbi.flows.conditional import conditional_flow_from_config
from jsbi.flows.ensemble import FlowEnsemble
from jsbi.posteriors.mixture import MixturePosterior
from jsbi.posteriors.posterior import Posterior
from jsbi.posteriors.proxy import ProxyPosterior
from jsbi.posteriors.spec import FORMAT, VERSION, prior_from_spec
from jsbi.posteriors.typicality import Typicality
from jsbi.proxies.likelihood import LikelihoodEnergy

__all__ = ["PosteriorLoadError", "load_posterior"]


class PosteriorLoadError(ValueError):
    r"""A file is not a readable jsbi posterior (missing, truncated, corrupt or foreign)."""


def load_posterior(
    path: str | os.PathLike,
    *,
    prior: Distribution | None = None,
    embedding_net: nn.Module | None = None,
    flow: type | None = None,
    device: str | torch.device = "cpu",
) -> Posterior:
    r"""Loads a posterior saved by :meth:`Posterior.save` (``torch.load(weights_only=True)``).

    Arguments:
        path: The file.
        prior: The prior; required when the saved one was not a supported type.
        embedding_net: An instance of the custom embedding module (architecture only; its
            trained weights come from the file); required when one was used.
        flow: The flow class, required when it was not a zuko class.
        device: Where to put the posterior.

    Returns:
        The :class:`Posterior`, with the same ``log_prob`` as the saved one.

    Raises:
        PosteriorLoadError: (a ``ValueError``) if the file is missing, truncated, corrupt
        or not a jsbi posterior.
    """
    state = _read(path, device)
    where = repr(os.fspath(path))
    if prior is None:
        if state["prior"] is not None:
            prior = prior_from_spec(state["prior"], device)
        elif state.get("prior_type") is not None:
            raise ValueError(
                f"the saved posterior's prior ({state['prior_type']}) is not stored in "
                f"{where}; pass it as load_posterior(path, prior=...)"
            )

    def build(config: dict) -> nn.Module:
        return conditional_flow_from_config(config, prior, embedding_net=embedding_net, flow=flow)

    try:
        config = state["config"]
        module = FlowEnsemble.from_config(config, build) if "ensemble" in config else build(config)
        module.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise PosteriorLoadError(f"{where} does not match the flow it describes: {e}") from e
    saved = state.get("proxy")
    proxy = None if saved is None else _proxy(saved, prior, where, module).to(device)
    for name, m in (("flow", module), ("proxy", proxy)):
        if m is not None and not all(bool(torch.isfinite(p).all()) for p in m.parameters()):
            raise PosteriorLoadError(
                f"{where} holds non-finite {name} weights: it would answer NaN, so it is not "
                "a posterior"
            )
    typicality = state.get("typicality")
    typicality = None if typicality is None else Typicality.from_state(typicality)
    if typicality is not None and typicality.kind == "evidence" and proxy is None:
        # A proxy without a config is not saved: its evidence check falls back to the
        # embedding check it was combined with (or to none).
        typicality = typicality.partner
    common = {
        "history": state.get("history"),
        "num_mass_samples": state.get("num_mass_samples", 10_000),
        "num_normalizer_samples": state.get(
            "num_normalizer_samples", (saved or {}).get("num_normalizer_samples", 4096)
        ),
        "typicality": typicality,
    }
    if saved is not None and saved.get("returned", "candidates_per_sample" in saved):
        # The proxy's posterior, or the equal mixture of the flow and the proxy.
        kind = MixturePosterior if saved.get("mixture") else ProxyPosterior
        posterior: Posterior = kind(
            module.to(device),
            proxy,
            prior,
            candidates_per_sample=saved["candidates_per_sample"],
            # Saved before the adaptive draws: the fixed count it sampled with.
            max_candidates_per_sample=saved.get(
                "max_candidates_per_sample", saved["candidates_per_sample"]
            ),
            ess_per_sample=saved.get("ess_per_sample", 1.0),
            # Saved before the MCMC sampler: importance resampling.
            sampler=saved.get("sampler", "importance"),
            mcmc_steps=saved.get("mcmc_steps", 10),
            mcmc_mala=saved.get("mcmc_mala", 1),
            # Saved before the chains could go on: None, no rounds (as they sampled).
            mcmc_max_steps=saved.get("mcmc_max_steps"),
            **common,
        )
    else:
        posterior = Posterior(module.to(device), prior, proxy=proxy, **common)
    if state.get("default_x") is not None:
        posterior.default_x = state["default_x"]  # checked when it was set, not again
    return posterior


def _read(path: str | os.PathLike, device: str | torch.device) -> dict:
    # The file's dict, or a PosteriorLoadError that says what is wrong with it.
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError as e:
        raise PosteriorLoadError(f"no posterior file at {os.fspath(path)!r}") from e
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise PosteriorLoadError(
            f"could not read a jsbi posterior from {os.fspath(path)!r} (truncated, corrupt or "
            f"not a torch file): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PosteriorLoadError(f"{os.fspath(path)!r} is not a jsbi posterior file")
    if state.get("version", 0) > VERSION:
        raise PosteriorLoadError(
            f"{os.fspath(path)!r} was written by a newer jsbi (format version "
            f"{state['version']} > {VERSION})"
        )
    return state


def _proxy(saved: dict, prior: Distribution, where: str, flow: nn.Module) -> LikelihoodEnergy:
    # (A likelihood of summaries reads them through the loaded flow's embedding.)
    summary = flow.embed if saved.get("config", {}).get("summary") else None
    try:
        proxy = LikelihoodEnergy.from_config(saved["config"], prior, summary=summary)
        proxy.load_state_dict(saved["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise PosteriorLoadError(f"{where} does not match the proxy it describes: {e}") from e
    return proxy
