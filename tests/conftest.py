from __future__ import annotations

from pathlib import Path

import pytest
import torch

# sbi's default TensorBoard writer logs to ./sbi-logs; jsbi's code and tests must not.
_SBI_LOGS = Path.cwd() / "sbi-logs"
_SBI_LOGS_BEFORE = _SBI_LOGS.exists()


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
    if not _SBI_LOGS_BEFORE and _SBI_LOGS.exists():
        session.config.get_terminal_writer().line(
            f"error: the tests wrote {_SBI_LOGS}; pass a no-op tracker when training sbi",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
