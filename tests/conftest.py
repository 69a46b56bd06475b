from __future__ import annotations

from pathlib import Path

import pytest
import torch

# sbi's default TensorBoard writer logs to ./sbi-logs; jsbi's code and tests must not.
_SBI_LOGS = Path.cwd() / "sbi-logs"


def _sbi_log_files() -> set[Path]:
    return set(_SBI_LOGS.rglob("*")) if _SBI_LOGS.exists() else set()


# Compare file sets, not the folder's existence: a folder left by an earlier run would
# otherwise hide a test that writes to it (CI's clean clone has none, and caught one).
_SBI_LOGS_BEFORE = _sbi_log_files()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_thread():
    # CI has 2 cores and the tests' networks are tiny: extra threads only add contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    new = _sbi_log_files() - _SBI_LOGS_BEFORE
    if new:
        session.config.get_terminal_writer().line(
            f"error: the tests wrote {len(new)} file(s) under {_SBI_LOGS}; pass a no-op "
            "tracker (jsbi.diagnostics.NullTracker) to sbi's trainers",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
