"""The few facts about the other processes of a run that code outside Lightning's loop needs.

Under DDP every process runs the whole command (Lightning starts the others by re-running it, or a launcher
starts them all); the work around ``trainer.fit`` — closing files of a sweep, reading a start checkpoint —
must know its rank and, where one process does the work, make the others wait for it. Before the first
Trainer has connected the processes (or in a single-process run) there is nobody to wait for.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.distributed as dist
from pytorch_lightning.utilities.rank_zero import rank_zero_only


def global_rank() -> int:
    """This process's global rank (0 without DDP), as Lightning sets it from the launcher's environment."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


def connected() -> bool:
    """Whether the processes of the run are connected (a process group is initialised)."""
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait until every process of the run gets here (nothing to wait for when not connected)."""
    if connected():
        dist.barrier()


@contextlib.contextmanager
def rank_zero_then_all() -> Iterator[bool]:
    """``with rank_zero_then_all() as mine:`` — rank 0 does the block's work where ``mine`` is True; every rank
    leaves the block together, once rank 0 is done (also when its work failed, so the others never hang)."""
    try:
        yield global_rank() == 0
    finally:
        barrier()

