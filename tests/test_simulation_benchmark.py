"""benchmarks/simulation.py end to end on a tiny grid: jsbi's and sbi's figures, written."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "simulation.py"


def test_the_throughput_benchmark_times_jsbi_sbibm_and_sbis_simulate_for_sbi(tmp_path):
    out = tmp_path / "throughput.csv"
    command = [sys.executable, str(SCRIPT), "--tasks", "two_moons", "--num-simulations", "200",
               "--parallel-simulations", "16", "--n-jobs", "2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # jsbi's parallel campaign gives the pairs of its serial one.
    assert "same pairs for n_jobs=1 and n_jobs=2: True" in proc.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["part"], r["simulator"], r["tool"], r["n_jobs"]) for r in rows) == [
        ("built-in task", "two_moons", "jsbi", "1"),
        ("built-in task", "two_moons", "sbibm", "1"),
        ("slow per-sample simulator", "slow (about 1 ms)", "jsbi", "1"),
        ("slow per-sample simulator", "slow (about 1 ms)", "jsbi", "2"),
        ("slow per-sample simulator", "slow (about 1 ms)", "sbi simulate_for_sbi", "1"),
        ("slow per-sample simulator", "slow (about 1 ms)", "sbi simulate_for_sbi", "2"),
    ]
    for r in rows:
        n, seconds = int(r["simulations"]), float(r["seconds"])
        assert n == (200 if r["part"] == "built-in task" else 16) and seconds > 0
        # The rate is the count over the seconds (the rate rounded as written).
        assert abs(int(r["simulations_per_second"]) - n / seconds) <= 0.01 * n / seconds + 1
