r"""The tables of ``benchmarks/npe_parity.py``: what they print is what the rows say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "npe_parity.py"


@pytest.fixture(scope="module")
def npe_parity():
    spec = importlib.util.spec_from_file_location("npe_parity", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows() -> list[dict]:
    # Two seeds of one cell, two observations each: jsbi ahead by 0.02 on seed 0 and
    # behind by 0.10 (0.08 and 0.12) on seed 1.
    c2st = {
        (0, 1): (0.60, 0.62),
        (0, 2): (0.64, 0.66),
        (1, 1): (0.70, 0.62),
        (1, 2): (0.72, 0.60),
    }
    rows = []
    for (seed, obs), (jsbi_c2st, sbi_c2st) in c2st.items():
        for method, value, t in (
            ("jsbi-npe-truncate", jsbi_c2st, 10.0),
            ("sbi-npe", sbi_c2st, 20.0),
        ):
            rows.append(
                {
                    "task": "two_moons",
                    "num_simulations": 1000,
                    "seed": seed,
                    "observation": obs,
                    "method": method,
                    "c2st": value,
                    "train_time_s": t,
                    "samples_per_s": 1e4,
                    "epochs": 50 if method == "sbi-npe" else 40,
                    "time_ratio_over_sbi": t / 20.0,
                    "samples_outside_prior": 0,
                }
            )
    return rows


def test_seed_table_gives_each_seeds_mean_and_paired_difference(npe_parity):
    lines = npe_parity.seed_table(_rows()).splitlines()[2:]
    jsbi = {int(line.split()[2]): line.split() for line in lines if "jsbi" in line}
    sbi = {int(line.split()[2]): line.split() for line in lines if "sbi-npe" in line}
    assert jsbi[0][4:6] == ["0.620", "-0.020"]
    assert jsbi[1][4:6] == ["0.710", "+0.100"]
    assert sbi[1][4] == "0.610"
    # sbi's own row has no difference column: its next field is the training time.
    assert sbi[1][5] == "20"
    # per epoch: (10 / 40) / (20 / 50) = 0.625
    assert jsbi[0][-1] == "0.62"


def test_table_pairs_over_seeds_and_observations(npe_parity):
    line = next(ln for ln in npe_parity.table(_rows()).splitlines() if "jsbi" in ln)
    # the four paired differences: -0.02, -0.02, +0.08, +0.12 -> mean +0.040
    assert "+0.040" in line
