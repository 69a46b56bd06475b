r"""Writes ``sbibm_tasks.json``: sbibm's observations 1..10 and true parameters.

The values are copied verbatim from the CSV files that sbibm 1.1.0 ships under
``sbibm/tasks/<task>/files/num_observation_<i>/`` (MIT licence, Lueckmann et al. 2021,
arXiv:2101.04653), plus the Bernoulli GLM's frozen input stimulus, so that jsbi's tasks
work without sbibm installed. sbibm is located with ``importlib.util.find_spec`` and
never imported.

Run once, from the repository root:

    python jsbi/simulators/data/make_sbibm_data.py
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import torch

# jsbi task name -> (sbibm folder, observation file)
FILES = {
    "gaussian_linear": ("gaussian_linear", "observation.csv"),
    "gaussian_linear_uniform": ("gaussian_linear_uniform", "observation.csv"),
    "two_moons": ("two_moons", "observation.csv"),
    "gaussian_mixture": ("gaussian_mixture", "observation.csv"),
    "slcp": ("slcp", "observation.csv"),
    "slcp_distractors": ("slcp", "observation_distractors.csv"),
    "bernoulli_glm": ("bernoulli_glm", "observation.csv"),
    "bernoulli_glm_raw": ("bernoulli_glm", "observation_raw.csv"),
    "sir": ("sir", "observation.csv"),
    "lotka_volterra": ("lotka_volterra", "observation.csv"),
}


def _row(path: Path) -> list[float]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 2, path  # header + one row
    return [float(v) for v in rows[1]]


def main() -> None:
    spec = importlib.util.find_spec("sbibm")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("sbibm is needed to regenerate the data")
    root = Path(spec.origin).parent / "tasks"
    out = {
        "_source": (
            "sbibm 1.1.0 (MIT licence), sbibm/tasks/<task>/files/num_observation_<i>/; "
            "Lueckmann et al. 2021, arXiv:2101.04653. Written by make_sbibm_data.py."
        ),
        "tasks": {},
    }
    for name, (folder, obs_file) in FILES.items():
        files = root / folder / "files"
        out["tasks"][name] = {
            "observations": [
                _row(files / f"num_observation_{i}" / obs_file) for i in range(1, 11)
            ],
            "true_parameters": [
                _row(files / f"num_observation_{i}" / "true_parameters.csv") for i in range(1, 11)
            ],
        }
    stimulus = torch.load(root / "bernoulli_glm" / "files" / "stimulus_I.pt", weights_only=True)
    out["tasks"]["bernoulli_glm"]["stimulus"] = stimulus.double().tolist()
    path = Path(__file__).parent / "sbibm_tasks.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
