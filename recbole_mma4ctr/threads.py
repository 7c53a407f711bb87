"""How many threads torch uses inside one run (``torch_threads`` in properties/overall.yaml).

Why: torch starts one intra-op thread per core. MMa4CTR's batches are small operations (an
8192 x 194 MLP step, gathers, concatenations); when other work shares the cores, a second
thread waiting for a busy core stalls every one of them (measured on a loaded 2-core machine:
an epoch 5.8x slower with 2 threads than with 1). Cells that the engine runs side by side must
therefore get 1 thread each, and a single run gets the setting's value.

``torch_threads``: a positive integer, or ``~`` (auto) = 1: measured here (issue 15,
benchmarks/mma4ctr_epoch.py --threads 1,2) 2 threads are only somewhat faster on an idle
2-core machine and several times slower on a busy one. A user with cores to spare sets it.
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
