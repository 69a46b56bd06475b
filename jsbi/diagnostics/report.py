r"""The comparison report: every diagnostic for every posterior, as tables and figures.

:func:`compare` runs C2ST (per observation, against reference samples when the task has
them), leakage, SBC, expected coverage, TARP and NLTP for each posterior on the same
held-out prior-predictive pairs; one batched draw of ``num_posterior_samples`` per pair
serves SBC, coverage and TARP. :meth:`Report.save` writes a self-contained directory:

* ``index.html``: the tables and the figures (PNG files beside it, relative links; it
  renders offline),
* ``results.csv``: long format, one row per method x observation x metric,
* ``coverage.png``, ``tarp.png``, ``sbc_ecdf.png``, ``pairplot_obs<i>.png``,
  ``training.png`` (when histories are given),
* ``samples.nc``: posterior samples, reference samples and SBC/HPD ranks as an arviz
  ``InferenceData`` (``arviz.from_netcdf`` opens it).

:func:`run_report` simulates, trains each objective (jsbi's or ``"sbi-npe"``) and saves
the report.
"""

from __future__ import annotations

__all__ = ["MethodResult", "Report", "compare"]

import html
import math
import numbers
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jsbi.diagnostics.c2st import (
    C2ST_CLASSIFIERS,
    NLTPResult,
    c2st,
    check_classifier,
    leakage,
    nltp,
)
from jsbi.diagnostics.coverage import (
    CoverageResult,
    coverage_from_log_probs,
    plot_coverage,
)
from jsbi.diagnostics.sbc import (
    SBCResult,
    check_sbc,
    draw_samples,
    log_prob_batched,
    plot_sbc_ecdf,
    sbc_ranks,
)
from jsbi.diagnostics.tarp import TARPResult, plot_tarp, tarp_from_samples
from jsbi.diagnostics.utils import PosteriorLike, seeded
from jsbi.files import atomic_write_text
from jsbi.methods.plans import PHASE2_WORDS, phase2_outcome
from jsbi.posteriors.mcmc import MixingInfo, mixing_problems
from jsbi.progress import interactive, processes, progress_bar, side_by_side

#: Chains the posterior samples of ``samples.nc`` are split into.
CHAINS = 4

# History keys drawn in the loss panel or not at all; every other per-epoch series
# (lambda, tau, ess, F, C, ...) gets its own panel.
_LOSS_KEYS = ("train_loss", "validation_loss")
_SKIP_KEYS = ("epoch", "epoch_time")


@dataclass
class MethodResult:
    r"""Every diagnostic of one posterior.

    Attributes:
        sbc, coverage, tarp, nltp: Results on the held-out pairs.
        c2st: Observation number -> C2ST accuracy (absent without references).
        leakage: Observation number -> fraction of mass outside the prior's support.
        lc2st: Observation number -> sbi's local C2ST p-value (observations without a
            reference; small: the posterior is not valid there).
        samples: Observation number -> posterior samples, shape ``(n, d)``.
        seconds: Wall time of this method's diagnostics.
        mixing: Observation number -> how the MCMC chains of that observation's draw
            mixed (:class:`~jsbi.posteriors.mcmc.MixingInfo` as a dict), for a posterior
            that samples by MCMC (a proxy posterior); empty otherwise.
    """

    sbc: SBCResult
    coverage: CoverageResult
    tarp: TARPResult
    nltp: NLTPResult
    c2st: dict[int, float] = field(default_factory=dict)
    leakage: dict[int, float] = field(default_factory=dict)
    samples: dict[int, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    lc2st: dict[int, float] = field(default_factory=dict)
    mixing: dict[int, dict[str, float]] = field(default_factory=dict)

    def rows(self, method: str) -> list[dict[str, Any]]:
        out = []
        for i, v in self.c2st.items():
            out.append({"method": method, "observation": str(i), "metric": "c2st", "value": v})
        for i, v in self.leakage.items():
            out.append({"method": method, "observation": str(i), "metric": "leakage", "value": v})
        for i, v in self.lc2st.items():
            row = {"method": method, "observation": str(i), "metric": "lc2st_p_value", "value": v}
            out.append(row)
        for i, info in self.mixing.items():
            for key, v in info.items():
                row = {"method": method, "observation": str(i), "metric": f"mcmc_{key}"}
                out.append({**row, "value": v})
        for res in (self.nltp, self.sbc, self.coverage, self.tarp):
            out.extend(res.rows(method))
        return out


@dataclass
class Report:
    r"""The results of :func:`compare`; :meth:`save` writes them out.

    Attributes:
        task_name: The task's name.
        theta_names: Parameter names.
        methods: Method name -> :class:`MethodResult`.
        references: Observation number -> reference samples (when available).
        observations: Observation number -> observation, shape ``(1, m)``.
        histories: Method name -> training history.
        settings: The numbers the diagnostics ran with.
    """

    task_name: str
    theta_names: list[str]
    methods: dict[str, MethodResult]
    references: dict[int, Tensor]
    observations: dict[int, Tensor]
    histories: dict[str, dict] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        r"""Long-format rows: ``method, observation, metric, value`` (``observation`` is
        ``"all"`` for metrics over the held-out pairs)."""
        out = []
        for name, res in self.methods.items():
            out.extend(res.rows(name))
        for name, h in self.histories.items():
            for key in ("wall_time", "epochs_trained", "best_validation_loss"):
                v = h.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.append({"method": name, "observation": "all", "metric": key, "value": v})
        return out

    def summary(self) -> str:
        r"""One line per method: mean C2ST over the observations (where references exist),
        the calibration verdicts, TARP's ATC, NLTP, epochs and training time.

        Returns:
            A plain-text table (what ``jsbi report`` prints).

        Example:
            >>> print(report.summary())                  # doctest: +SKIP
        """
        head = [
            "method",
            "returns",
            "C2ST",
            "coverage",
            "SBC",
            "TARP ATC",
            "NLTP",
            "epochs",
            "train (s)",
        ]
        lines = [head]
        for name, res in self.methods.items():
            c2st = list(res.c2st.values())
            h = self.histories.get(name, {})
            epochs, wall = h.get("epochs_trained"), h.get("wall_time")
            lines.append(
                [
                    name,
                    self.returned(name),
                    f"{sum(c2st) / len(c2st):.3f}" if c2st else "-",
                    res.coverage.verdict,
                    "in band" if res.sbc.calibrated else "out of band",
                    f"{res.tarp.atc:+.3f}",
                    f"{res.nltp.mean:.3f}",
                    str(epochs) if isinstance(epochs, int) else "-",
                    f"{wall:.1f}" if isinstance(wall, (int, float)) else "-",
                ]
            )
        widths = [max(len(row[j]) for row in lines) for j in range(len(head))]
        text = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        note = (
            f"C2ST ({self.c2st_kind}): mean over observations, 0.5 is perfect; NLTP: lower "
            "is better"
        )
        return "\n".join(text) + "\n" + note

    @property
    def c2st_kind(self) -> str:
        r"""The classifier of this report's C2ST, in words (a report saved before the
        choice existed used sbibm's MLP)."""
        kind = self.settings.get("c2st_classifier", "mlp")
        return C2ST_CLASSIFIERS.get(kind, str(kind))

    def returned(self, method: str) -> str:
        r"""What ``method``'s posterior is: ``"flow"``, ``"proxy"`` (the likelihood proxy),
        ``"mixture"`` (the equal mixture of the two) or ``"-"`` where its history does not
        say (sbi's NPE)."""
        return str(self.histories.get(method, {}).get("posterior", "-"))

    def colors(self) -> dict[str, str]:
        r"""One matplotlib colour per method, the same in every figure (the reference
        posterior is black)."""
        return {name: f"C{k % 10}" for k, name in enumerate(self.methods)}

    def verdict(self) -> list[str]:
        r"""Plain sentences, calibration first: which methods are calibrated; which is
        best on C2ST and on NLTP, only where its paired difference to the runner-up
        exceeds the standard error of that difference (else "level"), and never without
        a caveat when the best is not calibrated; what each symmetric run did; and which
        runs stopped at their epoch cap.

        Returns:
            The sentences, in the order the report shows them.
        """
        calibrated = [
            n
            for n, r in self.methods.items()
            if r.coverage.verdict == "calibrated" and r.sbc.calibrated
        ]
        out = [
            "Calibrated on both coverage and SBC: " + ", ".join(calibrated) + "."
            if calibrated
            else "No method is calibrated on both coverage and SBC: read every number below "
            "with that caveat."
        ]
        c2st = {n: r.c2st for n, r in self.methods.items() if r.c2st}
        out += _paired_verdict("C2ST", c2st, calibrated, "observation(s)")
        nltp = {n: dict(enumerate(r.nltp.values.tolist())) for n, r in self.methods.items()}
        out += _paired_verdict("NLTP", nltp, calibrated, "held-out pair(s)")
        for name in self.methods:
            gaps = _validation_gaps(self.histories.get(name, {}))
            if self.returned(name) == "proxy":
                out.append(
                    f"{name} returns its likelihood proxy (prior x likelihood, sampled by MCMC "
                    f"from its flow), not the flow{gaps}."
                )
            elif self.returned(name) == "mixture":
                out.append(
                    f"{name} returns the equal mixture of its flow and its likelihood proxy{gaps}."
                )
        for name, h in self.histories.items():
            phase2 = PHASE2_WORDS.get(phase2_outcome(h), "")
            if phase2 == PHASE2_WORDS["ran"]:
                phase2 += f"; the best state is phase {h.get('best_phase', '?')}'s"
            if phase2:
                out.append(f"{name}: {phase2}.")
            if _capped(h):
                out.append(
                    f"Warning: {name} stopped at its epoch cap ({h.get('epochs_trained')} "
                    "epochs) before early stopping: it had not converged."
                )
        for name, r in self.methods.items():
            for i, p in sorted(r.lc2st.items()):
                if p < 0.05:
                    out.append(
                        f"The local C2ST rejects {name} at observation {i} (p-value {p:.3g}): "
                        "its posterior there differs from the true one."
                    )
        for name, r in self.methods.items():
            for i, info in sorted(r.mixing.items()):
                problems = mixing_problems(MixingInfo(**info))
                if problems:
                    out.append(
                        f"{name}'s MCMC chains may not have mixed at observation {i}: "
                        + "; ".join(problems)
                        + ". Its samples there may not follow its proxy."
                    )
        for i, p in sorted(self.settings.get("atypical_observations", {}).items()):
            for name, value in p.items():
                out.append(
                    f"Observation {i} is atypical of the simulations for {name} "
                    f"(prior-predictive p-value {value:.3g}): its posterior there is an "
                    "extrapolation."
                )
        return out

    def save(self, out_dir: str | Path) -> Path:
        r"""Writes ``index.html``, ``results.csv``, the PNG figures and ``samples.nc``.

        Arguments:
            out_dir: The directory (created if needed).

        Returns:
            The path of ``index.html``.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(self.rows(), out / "results.csv")
        figures = self._figures(out)
        self._save_netcdf(out / "samples.nc")
        index = out / "index.html"
        atomic_write_text(index, self._html(figures))
        return index

    def _figures(self, out: Path) -> list[tuple[str, str]]:
        import matplotlib.pyplot as plt

        figs: list[tuple[str, str]] = []

        def save(fig: Any, name: str, caption: str) -> None:
            fig.savefig(out / name, dpi=90, bbox_inches="tight")
            plt.close(fig)
            figs.append((name, caption))

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        plot_coverage({k: v.coverage for k, v in self.methods.items()}, ax=ax)
        save(fig, "coverage.png", "Expected coverage of highest-density regions")

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        plot_tarp({k: v.tarp for k, v in self.methods.items()}, ax=ax)
        save(fig, "tarp.png", "TARP expected coverage")

        d = len(self.theta_names)
        n = len(self.methods)
        fig, axes = plt.subplots(n, d, figsize=(3 * d, 2.6 * n), squeeze=False)
        colors = self.colors()
        for row, (name, res) in zip(axes, self.methods.items(), strict=True):
            plot_sbc_ecdf(res.sbc, row, label=name, color=colors[name])
        fig.tight_layout()
        save(fig, "sbc_ecdf.png", "SBC rank ECDF differences with simultaneous bands")

        for i in self.observations:
            fig = _pairplot(self, i, self.colors())
            if fig is not None:
                save(fig, f"pairplot_obs{i}.png", f"Posterior samples, observation {i}")

        if self.histories:
            save(
                _training_figure(self.histories, self.colors()), "training.png", "Training curves"
            )
        return figs

    def _save_netcdf(self, path: Path) -> None:
        # arviz's conventions: one variable per parameter (the task's names), the methods
        # as the coordinate "estimator" (xarray's sel() reserves "method"), the observed
        # data in observed_data; SBC and HPD ranks and the reference posterior in groups of
        # their own.
        import xarray as xr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import arviz as az

        obs = sorted(self.observations)
        names = list(self.methods)
        var = {t: _var(t) for t in self.theta_names}
        attrs = {"task": self.task_name, "methods": ",".join(names), "inference_library": "jsbi"}
        groups: dict[str, xr.Dataset] = {}
        drawn = [n for n in names if all(i in self.methods[n].samples for i in obs)]
        if drawn and obs:
            m = min(len(self.methods[n].samples[i]) for n in drawn for i in obs)
            s = np.stack(
                [
                    torch.stack([self.methods[n].samples[i][:m] for i in obs], dim=1).numpy()
                    for n in drawn
                ],
                axis=1,
            )  # (draw, estimator, observation, d)
            # Independent draws, split into CHAINS chains: arviz's R-hat and ESS work.
            m = (m // CHAINS) * CHAINS
            s = s[:m].reshape(CHAINS, m // CHAINS, *s.shape[1:])
            groups["posterior"] = xr.Dataset(
                {
                    var[t]: (("chain", "draw", "estimator", "observation"), s[..., j])
                    for j, t in enumerate(self.theta_names)
                },
                coords={
                    "chain": np.arange(CHAINS),
                    "draw": np.arange(m // CHAINS),
                    "estimator": drawn,
                    "observation": obs,
                },
                attrs=attrs,
            )
        x = torch.cat([self.observations[i].reshape(1, -1) for i in obs]).numpy() if obs else None
        if x is not None:
            groups["observed_data"] = xr.Dataset(
                {"x": (("observation", "x_dim"), x)},
                coords={"observation": obs, "x_dim": np.arange(x.shape[1])},
            )
        ranks = np.stack([self.methods[n].sbc.ranks.numpy() for n in names])  # (estimator, N, d)
        hpd = np.stack([self.methods[n].coverage.hpd_ranks.numpy() for n in names])
        data = {
            var[t]: (("estimator", "pair"), ranks[:, :, j]) for j, t in enumerate(self.theta_names)
        }
        data["hpd_rank"] = (("estimator", "pair"), hpd)
        groups["sbc_ranks"] = xr.Dataset(
            data,
            coords={"estimator": names, "pair": np.arange(ranks.shape[1])},
            attrs={**attrs, "num_posterior_samples": self.settings["num_posterior_samples"]},
        )
        if self.references:
            ro = sorted(self.references)
            m = min(len(r) for r in self.references.values())
            r = torch.stack([self.references[i][:m] for i in ro], dim=1).numpy()
            groups["reference_posterior"] = xr.Dataset(
                {
                    var[t]: (("chain", "draw", "observation"), r[None, :, :, j])
                    for j, t in enumerate(self.theta_names)
                },
                coords={"chain": [0], "draw": np.arange(m), "observation": ro},
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-standard group names are intended
            az.InferenceData(**groups).to_netcdf(str(path))

    def _html(self, figures: list[tuple[str, str]]) -> str:
        import pandas as pd

        e = html.escape
        names = list(self.methods)
        frame = pd.DataFrame(self.rows())
        frame["metric"] = frame["metric"].map(_metric_name)
        table = frame.pivot_table(
            index=["metric", "observation"], columns="method", values="value", sort=False
        ).reindex(columns=names)
        metrics = table.to_html(
            table_id="results", na_rep="", float_format=_fmt, border=0, escape=True
        )

        def c2st_cell(r: MethodResult) -> str:
            v = np.asarray(list(r.c2st.values()))
            return f"{v.mean():.3f} &plusmn; {v.std():.3f}" if len(v) else "-"

        def epochs_cell(name: str) -> str:
            h = self.histories.get(name, {})
            n = h.get("epochs_trained")
            return "-" if n is None else f"{n}{' (cap!)' if _capped(h) else ''}"

        colors = self.colors()
        verdicts = "".join(
            f'<tr><td><span style="color:{_css_color(colors[n])}">&#9632;</span> {e(n)}</td>'
            f"<td>{e(self.returned(n))}</td><td>{c2st_cell(r)}</td><td>{e(r.coverage.verdict)}</td>"
            f"<td>{'yes' if r.sbc.calibrated else 'no'}</td>"
            f"<td>{r.tarp.atc:+.3f}</td><td>{r.nltp.mean:.3f} &plusmn; {r.nltp.stderr:.3f}</td>"
            f"<td>{e(epochs_cell(n))}</td><td>{r.seconds:.1f}</td></tr>"
            for n, r in self.methods.items()
        )
        verdict = "".join(f"<li>{e(v)}</li>" for v in self.verdict())
        imgs = "\n".join(
            f'<figure><img src="{e(f)}" alt="{e(c)}"><figcaption>{e(c)}</figcaption></figure>'
            for f, c in figures
        )
        settings = ", ".join(f"{e(str(k))} = {e(str(v))}" for k, v in self.settings.items())
        return _PAGE.format(
            title=e(f"jsbi report: {self.task_name}"),
            c2st_kind=e(self.c2st_kind),
            settings=settings,
            verdicts=verdicts,
            verdict=verdict,
            metrics=metrics,
            figures=imgs,
        )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
  max-width: 75em; padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ font-weight: 600; border-bottom: 2px solid #2b6cb0; padding-bottom: 0.2em; }}
h2 {{ font-weight: 600; margin-top: 1.6em; color: #2b6cb0; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }}
th {{ background: #edf2f7; font-weight: 600; }}
th, td {{ border: 1px solid #cbd5e0; padding: 0.25em 0.7em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr:nth-child(even) td {{ background: #f7fafc; }}
#verdict li {{ margin: 0.25em 0; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; background: #fff;
  border: 1px solid #e2e8f0; border-radius: 4px; padding: 0.4em; }}
img {{ max-width: 100%; }}
figcaption {{ font-size: 0.88em; color: #4a5568; }}
p.settings {{ color: #4a5568; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="settings">{settings}</p>
<h2>Summary</h2>
<ul id="verdict">
{verdict}
</ul>
<table id="summary">
<tr><th>method</th><th>returns</th><th>C2ST (mean &plusmn; sd over observations; {c2st_kind})</th>
<th>coverage</th><th>SBC in band</th><th>TARP ATC</th><th>NLTP (&plusmn; se)</th><th>epochs</th>
<th>diagnostics (s)</th></tr>
{verdicts}
</table>
<p>Coverage below the diagonal means over-confident (regions too small); TARP ATC below 0
also. C2ST 0.5 is perfect, 1 fully separable.</p>
<h2>Metrics</h2>
{metrics}
<h2>Figures</h2>
{figures}
<script>
(function () {{
  var imgs = Array.prototype.slice.call(document.images);
  function check() {{
    if (imgs.every(function (i) {{ return i.complete; }})) {{
      var ok = imgs.every(function (i) {{ return i.naturalWidth > 0; }});
      document.body.setAttribute("data-images-loaded", ok ? "true" : "false");
    }}
  }}
  imgs.forEach(function (i) {{
    i.addEventListener("load", check);
    i.addEventListener("error", check);
  }});
  check();
}})();
</script>
</body>
</html>
"""


def _paired_verdict(
    metric: str, values: dict[str, dict[Any, float]], calibrated: list[str], unit: str
) -> list[str]:
    # The best method on a lower-is-better metric against the runner-up, paired over the
    # units both have: named best only beyond one standard error of the difference.
    means = {n: float(np.mean(list(v.values()))) for n, v in values.items() if v}
    means = {n: m for n, m in means.items() if math.isfinite(m)}
    if not means:
        return []
    ranked = sorted(means, key=means.get)
    best = ranked[0]
    if len(ranked) == 1:
        return [f"{metric}: {best} {means[best]:.3g} (one method)."]
    runner = ranked[1]
    common = sorted(set(values[best]) & set(values[runner]))
    diffs = np.asarray([values[runner][k] - values[best][k] for k in common], dtype=float)
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) < 2:
        return [
            f"{metric}: {best} {means[best]:.3g}, {runner} {means[runner]:.3g} "
            f"(too few {unit} to tell)."
        ]
    gap, se = float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(len(diffs)))
    caveat = "" if best in calibrated else " (but it is not calibrated)"
    if gap > se:
        return [
            f"Lowest {metric}: {best}{caveat}, {means[best]:.3g}; {gap:.3g} ± {se:.3g} below "
            f"{runner}, paired over {len(diffs)} {unit}."
        ]
    return [
        f"{metric}: {best} and {runner} are level ({means[best]:.3g} and {means[runner]:.3g}; "
        f"the paired difference {gap:.3g} ± {se:.3g} is within its standard error)."
    ]


#: The metrics table's readable names.
_METRIC_NAMES = {
    "c2st": "C2ST",
    "leakage": "mass outside the prior",
    "lc2st_p_value": "local C2ST p-value",
    "nltp": "NLTP",
    "nltp_stderr": "NLTP standard error",
    "wall_time": "training time (s)",
    "epochs_trained": "epochs",
    "best_validation_loss": "best validation loss",
}


def _metric_name(key: str) -> str:
    return _METRIC_NAMES.get(key, key.replace("_", " "))


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}"


def _css_color(color: str) -> str:
    from matplotlib.colors import to_hex

    return to_hex(color)


def _var(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import csv
    import io

    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=["method", "observation", "metric", "value"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _pairplot(report: Report, i: int, method_colors: Mapping[str, str]) -> Any:
    from matplotlib.lines import Line2D

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sbi.analysis import pairplot

    sets, labels, colors = [], [], []
    for name, res in report.methods.items():
        if i in res.samples:
            sets.append(res.samples[i][:1000])
            labels.append(name)
            colors.append(method_colors[name])
    if i in report.references:
        # Last, so drawn on top; black, so never confused with a method.
        sets.append(report.references[i][:1000])
        labels.append("reference")
        colors.append("k")
    if not sets:
        return None
    d = len(report.theta_names)
    ref = "reference" in labels
    upper = [
        {"mpl_kwargs": {"color": c, "s": 2 if ref and k == len(sets) - 1 else 3, "alpha": 0.5}}
        for k, c in enumerate(colors)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, axes = pairplot(
            [s.numpy() for s in sets],
            upper=["scatter"] * len(sets),
            diag=["hist"] * len(sets),
            labels=report.theta_names,
            figsize=(2.2 * d + 1, 2.2 * d + 1),
            upper_kwargs=upper,
            diag_kwargs=[
                {"mpl_kwargs": {"color": c, "histtype": "step", "bins": 40, "density": True}}
                for c in colors
            ],
        )
    for ax in np.atleast_1d(axes).ravel():
        if ax.get_visible():
            ax.tick_params(labelsize=7, labelbottom=True)
    handles = [Line2D([], [], color=c, lw=2) for c in colors]
    # Outside the axes, so it covers no data.
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.suptitle(f"observation {i}", fontsize=10)
    return fig


def _series(h: Mapping[str, Any]) -> dict[str, list[float]]:
    # The per-epoch series a run has: numbers, not all NaN, and not constant (a flat
    # series is one the run's schedule never moved: the joint schedule's dual under
    # npe-first, say); the losses always.
    out = {}
    for k, v in h.items():
        if k in _SKIP_KEYS or not isinstance(v, (list, tuple)) or len(v) < 1:
            continue
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in v):
            continue
        finite = [float(t) for t in v if math.isfinite(t)]
        if k in _LOSS_KEYS or (finite and max(finite) > min(finite)):
            out[k] = [float(t) for t in v]
    return out


# Readable panel titles for the training histories' series.
_TITLES = {
    "train_F": "forward NLL F (train)",
    "train_R": "reverse term R (train)",
    "train_C": "proxy fit C (train)",
    "train_fit": "proxy's own fit (train)",
    "train_contrastive": "proxy's contrastive loss (train)",
    "train_lambda": "dual variable lambda",
    "train_u": "resilient slack u",
    "train_collapsed": "importance sampler collapsed (share of steps)",
    "train_outside": "reverse samples outside the prior (per step)",
    "train_faults": "restored faults",
    "train_gate": "gate (train)",
    "train_phase": "phase (1: npe, 2: symmetric)",
    "train_ess": "importance sampler ESS (train)",
    "train_violation": "constraint violation C - F - eps - u",
    "train_tau": "SRFE tau",
    "validation_proxy_fit": "proxy's own fit (validation)",
    "validation_proxy_nll": "proxy NLL (validation)",
    "validation_proxy_minus_flow": "proxy NLL minus flow NLL (validation)",
    "validation_proxy_minus_flow_se": "its standard error",
    "validation_mixture_minus_flow": "mixture NLL minus flow NLL (validation)",
    "validation_mixture_minus_flow_se": "its standard error",
    "validation_proxy_ess": "gate's importance sampler ESS",
    "validation_gate": "gate (validation)",
}


def _validation_gaps(history: Mapping[str, Any]) -> str:
    # "; validation NLL minus the flow's: proxy +0.120 ± 0.050 and mixture -0.080 ± 0.020
    # nats per pair", from the fit's last measurement ("" where it has none).
    m = history.get("final_proxy") or {}
    parts = [
        f"{who} {m[key]:+.3f} ± {m[key + '_se']:.3f}"
        for who, key in (("proxy", "proxy_minus_flow"), ("mixture", "mixture_minus_flow"))
        if isinstance(m.get(key), float) and math.isfinite(m[key])
    ]
    if not parts:
        return ""
    return f"; validation NLL minus the flow's: {' and '.join(parts)} nats per pair"


def _training_figure(
    histories: Mapping[str, Mapping[str, Any]], method_colors: Mapping[str, str]
) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = {name: _series(h) for name, h in histories.items()}
    extra = sorted({k for s in series.values() for k in s if k not in _LOSS_KEYS})
    n = 1 + len(extra)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    axes = axes.ravel()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (name, s) in enumerate(series.items()):
        c = method_colors.get(name, cycle[j % len(cycle)])
        for key, ls in zip(_LOSS_KEYS, ("-", "--"), strict=True):
            if key in s:
                epochs = np.arange(1, len(s[key]) + 1)
                axes[0].plot(epochs, s[key], ls, color=c, label=f"{name} {key.split('_')[0]}")
        for ax, key in zip(axes[1:], extra, strict=False):
            if key in s:
                ax.plot(np.arange(1, len(s[key]) + 1), s[key], color=c, label=name)
    axes[0].set_title("loss (-log q), train solid, validation dashed", fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, key in zip(axes[1:], extra, strict=False):
        ax.set_title(_TITLES.get(key, key.replace("_", " ")), fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[:n]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _observed(x_o: Any, shape: torch.Size, i: Any) -> Tensor:
    x_o = torch.as_tensor(x_o, dtype=torch.float32)
    if x_o.numel() != shape.numel():
        raise ValueError(
            f"observations[{i!r}] must have the simulator's shape {tuple(shape)} (or with a "
            f"leading 1); got {tuple(x_o.shape)}"
        )
    x_o = x_o.reshape(1, *shape)
    if not torch.isfinite(x_o).all():
        raise ValueError(f"observations[{i!r}] must be finite")
    return x_o


def _references(task: Any, observations: Sequence[int]) -> dict[int, Tensor]:
    refs = {}
    for i in observations:
        try:
            r = task.reference_samples(i)
        except (NotImplementedError, AttributeError, FileNotFoundError):
            continue
        if r is not None:
            refs[i] = torch.as_tensor(r, dtype=torch.float32)
    return refs


def compare(
    posteriors: Mapping[str, PosteriorLike],
    task: Any,
    *,
    observations: Sequence[int] | Mapping[int, Tensor] = (1, 2, 3),
    num_sbc: int = 1000,
    num_posterior_samples: int = 1000,
    num_c2st_samples: int = 10_000,
    c2st_classifier: str = "rf",
    test_pairs: tuple[Tensor, Tensor] | None = None,
    histories: Mapping[str, dict] | None = None,
    batch_size: int = 100,
    seed: int = 0,
    show_progress_bar: bool | None = False,
    lc2st: bool | None = None,
    n_jobs: int | None = -1,
) -> Report:
    r"""Runs every diagnostic on every posterior.

    Arguments:
        posteriors: Method name -> posterior (jsbi's or sbi's; anything with
            ``sample_batched`` and ``log_prob_batched``).
        task: A task: ``prior``, ``simulate``, ``observation(i)``, optionally
            ``reference_samples(i)``, ``name``, ``theta_names``; or any simulator
            (``prior`` and ``simulate``, e.g. from :func:`jsbi.wrap`) when
            ``observations`` gives the observed data itself.
        observations: Observation numbers of the task for C2ST, leakage and
            pairplots; or a mapping ``{number: x_o}`` of your own observed data
            (shape ``(m,)`` or ``(1, m)``), which has no reference posterior and so
            no C2ST.
        num_sbc: Held-out prior-predictive pairs for SBC, coverage, TARP and NLTP
            (drawn with ``seed`` unless ``test_pairs`` is given).
        num_posterior_samples: Samples per held-out pair.
        num_c2st_samples: Samples per observation for C2ST (at most as many as the
            reference has; sbibm uses 10,000) and for leakage.
        c2st_classifier: ``"rf"`` (sbi's random forest) or ``"mlp"`` (sbibm's, which the
            published numbers use; about 6 times slower on one core at 10,000 samples of
            two parameters): C2ST's classifier, one kind for every method.
        test_pairs: Held-out ``(theta, x)`` to use instead of drawing them.
        histories: Method name -> training history (per-epoch ``train_loss``,
            ``validation_loss``, and any other series such as ``train_lambda``).
        batch_size: Pairs per batched sampling call.
        seed: Seeds the pairs, the posterior sampling and the classifiers.
        show_progress_bar: A tqdm bar naming the method and the diagnostic being run
            (``None``: in a terminal or a notebook).
        lc2st: Run sbi's local C2ST at the observations without a reference posterior,
            trained on the held-out pairs (``None``: where there are such observations).
        n_jobs: Processes (``-1``: every core): the methods side by side, else a C2ST's
            folds; every diagnostic is seeded, so the results do not depend on it.

    Returns:
        A :class:`Report`.

    Example:
        >>> report = compare({"jsbi-npe": posterior, "sbi-npe": baseline}, task)
        ... # doctest: +SKIP
        >>> report.save("report/")                       # doctest: +SKIP
    """
    if not posteriors:
        raise ValueError("posteriors must hold at least one method")
    check_classifier(c2st_classifier, "c2st_classifier")
    jobs = processes(n_jobs, "n_jobs")
    theta, x = _held_out_pairs(task, num_sbc, test_pairs, seed)
    d = theta.shape[1]
    theta_names = list(getattr(task, "theta_names", None) or [f"theta_{i + 1}" for i in range(d)])
    obs, refs = _observations(task, observations, x.shape[1:])
    if show_progress_bar is None:
        show_progress_bar = interactive()
    bar = _diagnostics_bar(len(posteriors), len(obs), show_progress_bar)
    budget = {
        "num_posterior_samples": num_posterior_samples,
        "num_c2st_samples": num_c2st_samples,
        "c2st_classifier": c2st_classifier,
        "batch_size": batch_size,
        "lc2st": lc2st is not False and any(i not in refs for i in obs),
    }
    jobs = _schedule(posteriors, jobs, budget, x, len(obs), bar, show_progress_bar)
    # A C2ST fits its folds in processes only where the methods do not.
    budget["c2st_jobs"] = n_jobs if jobs == 1 else 1
    data = ((theta, x, theta_names), obs, refs)
    methods = _diagnose_all(posteriors, jobs, task, data, budget, seed, bar)
    bar.close()
    settings = {
        "task": getattr(task, "name", "task"),
        "num_sbc": int(theta.shape[0]),
        "seed": seed,
        "observations": list(observations),
        **{k: v for k, v in budget.items() if k.startswith("num_")},
        "c2st_classifier": c2st_classifier,
        **_typicality(posteriors, obs),
    }
    return Report(
        task_name=str(getattr(task, "name", "task")),
        theta_names=theta_names,
        methods=methods,
        references=refs,
        observations=obs,
        histories={k: dict(v) for k, v in (histories or {}).items()},
        settings=settings,
    )


def _diagnostics_bar(num_methods: int, num_obs: int, show: bool) -> Any:
    # One tick per diagnostic per method: SBC sampling, coverage, TARP, NLTP, then each
    # observation (its samples, C2ST and leakage).
    total = num_methods * (4 + num_obs)
    return progress_bar(total=total, desc="Diagnostics", unit="step", disable=not show)


def _schedule(
    posteriors: Mapping[str, Any],
    jobs: int,
    budget: dict,
    x: Tensor,
    n_obs: int,
    bar: Any,
    show: bool,
) -> int:
    # The processes that diagnose the methods: side by side only on the CPU (a GPU's
    # posteriors in turn). Prints the expected duration where a bar shows.
    on_cpu = all(str(getattr(p, "device", "cpu")) == "cpu" for p in posteriors.values())
    jobs = min(jobs, len(posteriors)) if on_cpu else 1
    if show:
        seconds = _expected_seconds(posteriors, x, budget["num_posterior_samples"], n_obs, budget)
        side = f", {jobs} side by side" if jobs > 1 else ""
        bar.write(
            f"Diagnostics: about {_makespan(seconds, jobs):.0f} s expected "
            f"({len(posteriors)} methods{side})"
        )
    return jobs


def _diagnose_all(
    posteriors: Mapping[str, Any],
    jobs: int,
    task: Any,
    data: tuple,
    budget: dict,
    seed: int,
    bar: Any,
) -> dict[str, MethodResult]:
    # Every posterior diagnosed, each with its own seed: in turn, or side by side in
    # `jobs` loky processes that share the caller's threads.
    pairs, obs, refs = data
    work = [(name, p, seed + 100 * (k + 1)) for k, (name, p) in enumerate(posteriors.items())]
    methods = {}
    if jobs == 1:
        for name, posterior, s in work:
            methods[name] = _diagnose(
                name, posterior, task, pairs, obs, refs, budget, seed, s, bar
            )
        return methods
    bar.set_description(f"Diagnostics: {len(work)} methods in {jobs} processes")
    calls = [(name, p, task, pairs, obs, refs, budget, seed, s, None) for name, p, s in work]
    for (name, _, _), res in zip(work, side_by_side(_diagnose, calls, jobs), strict=True):
        methods[name] = res
        bar.update(4 + len(obs))
    return methods


def _expected_seconds(
    posteriors: Mapping[str, Any], x: Tensor, n_post: int, n_obs: int, budget: dict
) -> list[float]:
    # Times each posterior's samples at a few pairs and extrapolates: the held-out pairs'
    # draws and log densities (about 3 times the draws), and each observation's draws.
    probe = x[: min(8, len(x))]
    each = []
    for post in posteriors.values():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draw_samples(post, probe, n_post, batch_size=len(probe), seed=0)
        per_draw = (time.perf_counter() - start) / (len(probe) * n_post)
        each.append(per_draw * (3 * len(x) * n_post + n_obs * budget["num_c2st_samples"]))
    return each


def _makespan(seconds: Sequence[float], jobs: int) -> float:
    # The wall time of jobs taken in order by `jobs` processes, each by the first free one.
    free = [0.0] * max(1, jobs)
    for s in seconds:
        free[free.index(min(free))] += s
    return max(free)


def _capped(history: Mapping[str, Any]) -> bool:
    # Training ended at its epoch cap: jsbi's and sbi's runs record it in stopped_by; a
    # history given by hand (or saved before stopped_by) says it by converged=False.
    if "stopped_by" in history:
        return history["stopped_by"] == "the epoch cap"
    return history.get("converged") is False and not history.get("interrupted")


def _typicality(posteriors: Mapping[str, Any], obs: dict[int, Tensor]) -> dict:
    # Each observation's prior-predictive p-value under each posterior that has one, and
    # those below that posterior's own misspecification threshold.
    values: dict[int, dict[str, float]] = {}
    atypical: dict[int, dict[str, float]] = {}
    for name, post in posteriors.items():
        if not callable(getattr(post, "observation_p_value", None)):
            continue
        threshold = post.misspecification_threshold
        for i, x_o in obs.items():
            p = post.observation_p_value(x_o.reshape(-1))
            if math.isfinite(p):
                values.setdefault(i, {})[name] = p
                if threshold is not None and p < threshold:
                    atypical.setdefault(i, {})[name] = p
    if not values:
        return {}
    return {"observation_p_values": values, "atypical_observations": atypical}


def _held_out_pairs(
    task: Any, num_sbc: int, test_pairs: tuple[Tensor, Tensor] | None, seed: int
) -> tuple[Tensor, Tensor]:
    # The prior-predictive pairs of SBC, coverage, TARP and NLTP (the finite ones).
    if test_pairs is None:
        with seeded(seed + 1):
            theta = task.prior.sample((num_sbc,))
            x = torch.as_tensor(task.simulate(theta))
    else:
        theta, x = (torch.as_tensor(t) for t in test_pairs)
    ok = torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
    return theta[ok].float(), x[ok].float()


def _observations(
    task: Any, observations: Sequence[int] | Mapping[int, Tensor], shape: torch.Size
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    # The observations by number, and the reference samples of those that have them.
    if isinstance(observations, Mapping):
        bad = [
            k for k in observations if isinstance(k, bool) or not isinstance(k, numbers.Integral)
        ]
        if bad:
            raise ValueError(
                f"observations' keys must be ints (they number the observations), got {bad}"
            )
        return {int(i): _observed(v, shape, i) for i, v in observations.items()}, {}
    refs = _references(task, observations)
    obs = {i: torch.as_tensor(task.observation(i), dtype=torch.float32) for i in observations}
    return obs, refs


def _diagnose(
    name: str,
    posterior: Any,
    task: Any,
    pairs: tuple[Tensor, Tensor, list[str]],
    obs: dict[int, Tensor],
    refs: dict[int, Tensor],
    budget: dict[str, int],
    seed: int,
    s: int,
    bar: Any,
) -> MethodResult:
    # Every diagnostic of one posterior: on the held-out pairs, then at each observation.
    theta, x, theta_names = pairs
    n_post, batch_size = budget["num_posterior_samples"], budget["batch_size"]
    start = time.perf_counter()

    def doing(what: str) -> None:
        if bar is not None:
            bar.set_description(f"Diagnostics: {name}, {what}")

    def tick() -> None:
        if bar is not None:
            bar.update(1)

    doing(f"SBC ({len(theta)} pairs x {n_post} samples)")
    samples = draw_samples(posterior, x, n_post, batch_size=batch_size, seed=s)
    sbc = check_sbc(sbc_ranks(samples, theta), n_post, theta_names=theta_names)
    lc2st = _lc2st(theta, x, samples[0], s) if budget.get("lc2st") else None
    tick()
    doing("expected coverage")
    lq = log_prob_batched(
        posterior, torch.cat([theta[None], samples]), x, batch_size=batch_size, normalize=False
    )
    cov = coverage_from_log_probs(lq[1:], lq[0])
    tick()
    doing("TARP")
    tarp = tarp_from_samples(samples, theta, seed=s)
    del samples, lq
    tick()
    doing("NLTP")
    with seeded(s):  # sbi's normalisation draws from torch's stream: the same in any process
        held_out_nltp = nltp(posterior, theta, x)
    res = MethodResult(sbc=sbc, coverage=cov, tarp=tarp, nltp=held_out_nltp)
    tick()
    for i, x_o in obs.items():
        doing(f"observation {i}" + (" (C2ST)" if i in refs else ""))
        n = (
            min(budget["num_c2st_samples"], len(refs[i]))
            if i in refs
            else budget["num_c2st_samples"]
        )
        draws = draw_samples(posterior, x_o, n, seed=s + i)[:, 0]
        res.samples[i] = draws
        mixing = getattr(posterior, "last_mixing", None)  # this draw's chains, if any
        if isinstance(mixing, MixingInfo):
            res.mixing[i] = mixing.as_dict()
        if i in refs:
            res.c2st[i] = c2st(
                draws,
                refs[i][:n],
                seed=seed,
                classifier=budget["c2st_classifier"],
                n_jobs=budget["c2st_jobs"],
            )
        elif lc2st is not None:
            res.lc2st[i] = float(lc2st.p_value(draws[:LC2ST_SAMPLES], x_o.reshape(1, -1)))
        if hasattr(task, "prior"):
            res.leakage[i] = float(leakage(posterior, x_o, task.prior, n, seed=s + i)[0])
        tick()
    res.seconds = time.perf_counter() - start
    return res


#: LC2ST: classifier trainings under the null, and posterior samples at an observation.
LC2ST_NULL_TRIALS = 20
LC2ST_SAMPLES = 1000


def _lc2st(theta: Tensor, x: Tensor, samples: Tensor, seed: int) -> Any:
    # sbi's local C2ST, trained on the held-out pairs and one posterior sample of each:
    # a test of the posterior's validity at any observation, without a reference.
    from sbi.diagnostics import LC2ST

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = LC2ST(
            prior_samples=theta.cpu(),
            xs=x.cpu(),
            posterior_samples=samples.cpu(),
            seed=seed,
            num_trials_null=LC2ST_NULL_TRIALS,
        )
        test.train_under_null_hypothesis()
        test.train_on_observed_data()
    return test
