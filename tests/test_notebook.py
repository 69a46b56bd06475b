"""In a real Jupyter kernel (nbclient + ipykernel): training shows its progress, a one-line
summary and the epoch-cap warning, and simulation no IProgress warning."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELL = """
import torch, jsbi
from torch.distributions import Independent, Normal
prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
sim = jsbi.wrap(lambda t: t + 0.3 * torch.randn_like(t), prior, name="shift")
theta, x = jsbi.simulate(sim, 600, batch_size=100)
post = jsbi.PosteriorEstimator(prior, num_transforms=1).fit(theta, x, max_epochs=3)
"""


def _text(cell) -> str:
    out = []
    for o in cell.outputs:
        out.append(o.get("text", "") if o.output_type == "stream" else str(o.get("data", "")))
    return "".join(out)


def test_a_notebook_shows_progress_the_summary_and_the_epoch_cap():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    text = _text(nb.cells[0])
    assert "Simulating shift" in text  # the simulation's bar
    assert "Training" in text and "epoch" in text  # the training bar
    assert "Training hit the epoch cap after 3 epochs" in text  # the summary line
    assert "training hit the epoch cap (max_epochs=3)" in text  # the warning
    assert "IProgress" not in text
