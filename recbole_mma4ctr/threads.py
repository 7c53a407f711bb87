"""How many threads torch uses inside one run (``torch_threads`` in properties/overall.yaml).

Why: torch starts one intra-op thread per core. MMa4CTR's batches are small operations (an
8192 x 194 MLP step, gathers, concatenations); when other work shares the cores, a second
thread waiting for a busy core stalls every one of them (measured on a loaded 2-core machine:
an epoch 5.8x slower with 2 threads than with 1). Cells that the engine runs side by side must
therefore get 1 thread each, and a single run gets the setting's value.

``torch_threads``: a positive integer, or ``~`` (auto) = 1. Measured on this project's 2-core
machine (benchmarks/mma4ctr_epoch.py --threads 1,2, one MMa4CTR epoch on the WeChat sample,
alternating, median of 5): with the machine nearly idle (load 2.0, the benchmark itself
included) 2 threads were 1.63x faster than 1; with two CPU burners beside it they were 2.0x
slower (1 thread 0.98 s, 2 threads 1.94 s), and the issue saw 5.8x slower while other jobs ran.
A lost factor of 2-6 outweighs a gained 1.6, and parallel cells need 1 anyway, so auto is 1. A
user with idle cores to spare sets the number of cores a single run may use.
"""

from __future__ import annotations

AUTO_THREADS = 1


def torch_threads(value) -> int:
    """The thread count a ``torch_threads`` value asks for (``~`` / None -> ``AUTO_THREADS``)."""
    if value is None:
        return AUTO_THREADS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"torch_threads must be a positive integer or ~ (auto: {AUTO_THREADS}), got {value!r}")
    return value


def apply_torch_threads(value) -> int:
    """Set torch's intra-op thread count for this process from a ``torch_threads`` value; returns it.

    Inter-op threads are left alone: torch only lets them be set before its first parallel
    operation, and MMa4CTR's graph has no parallel branches for them to run.
    """
    import torch

    threads = torch_threads(value)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
