"""Shared fixture of the theory tests: one BLAS/OpenMP thread.

The theory tests run many small (batched) linear-algebra calls; on a shared 2-core machine the
thread barriers dominate them, and one thread was measured 10× faster than two.
"""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
