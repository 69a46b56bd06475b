from __future__ import annotations

import csv
import json

import pytest
import torch

from jsbi.cli import main
from jsbi.inference import load_posterior


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_run_two_moons_tiny(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--task", "two_moons", "--num-simulations", "200", "--max-epochs", "3"]
    argv += ["--num-samples", "50", "--out", str(out), "--quiet", "--observation", "2"]
    assert main(argv) == 0
    samples = torch.load(out / "samples.pt")
    assert samples.shape == (50, 2)
    # two_moons' prior is the box [-1, 1]^2 and the flow is bounded.
    assert samples.abs().max() <= 1
    with open(out / "samples.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["theta_1", "theta_2"] and len(rows) == 51
    history = json.loads((out / "history.json").read_text())
    assert (
        history["epochs_trained"] == 3 and history["num_train"] + history["num_validation"] == 200
    )
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "two_moons" and run["observation"] == 2
    posterior = load_posterior(out / "posterior.pt")
    assert torch.isfinite(posterior.log_prob(samples)).all()  # default_x was saved


def test_run_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="not implemented"):
        main(["run", "--task", "two_moons", "--objective", "jeffreys", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="flow must be one of"):
        main(["run", "--task", "two_moons", "--flow", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["run", "--task", "no_such_task", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "run" in capsys.readouterr().out
