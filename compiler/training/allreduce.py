"""The all-reduce of a distributed step: the flat gradient buffers of all ranks summed, through
memory the ranks of one machine share or through MPI_Allreduce (compiler/training/distributed.py
runs it between its gradient and update kernels; docs/distributed.md has the measurements).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

INSTALL = 'pip install "gradfuse[mpi]"'
ALLREDUCE_VARIABLE = "GRADFUSE_MPI_ALLREDUCE"  # "shared" or "mpi" (default: shared on a node)
ALIGN = 16  # elements: each rank's buffer and each rank's part of the sum start on a cache line


def mpi() -> Any:
    """mpi4py's MPI module, or an ImportError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError("distributed training (comm=...) needs mpi4py and an MPI library: "
                          f"{INSTALL}") from err
    return MPI


def check_comm(comm: Any) -> Any:
    """`comm` if it is an MPI intra-communicator; a clear error otherwise."""
    MPI = mpi()
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError("comm must be an mpi4py intra-communicator such as MPI.COMM_WORLD, got "
                        f"{type(comm).__name__}")
    return comm


# --- summing the buffers of all ranks -----------------------------------------------------------
# Every all-reduce below offers the same three things to DataParallel:
#   segments[s]  the row this rank's gradient kernel writes into, for buffer set s;
#   sources[s]   the rows whose sum, in this order, is the sum over all ranks, for set s (the
#                update kernel adds them up: one row when the all-reduce summed already);
#   reduce()     makes set `current` readable as sources[current], returns that set's index
#                and moves `current` on to the set the next step writes.
# Two sets let a rank write the next step's gradients while a slower rank still reads this
# step's (SharedMemoryAllreduce summing in the update); the others have one set.
SUM_IN_UPDATE_MAX_RANKS = 2  # ranks of one machine up to which the update kernel sums the rows


class MpiAllreduce:
    """The sum through MPI_Allreduce, in place in one private buffer per rank."""

    name = "MPI_Allreduce"

    def __init__(self, comm: Any, length: int, dtype: np.dtype) -> None:
        self.comm = comm
        buffer = np.zeros(length, dtype)
        self.segments, self.sources, self.current = [buffer], [[buffer]], 0
        self._in_place = mpi().IN_PLACE

    def reduce(self) -> int:
        self.comm.Allreduce(self._in_place, self.segments[0])
        return 0

    def close(self) -> None:
        pass


class SharedMemoryAllreduce:
    """The sum through memory that the ranks of one machine share (an MPI-3 shared window).

    MPI_Allreduce on one machine copies the data into MPI's shared buffers and out again:
    W4's 2.7 MB of float32 gradients took 0.40 ms between two ranks here, this sum 0.15 ms
    (W10, docs/distributed.md). Each rank writes its buffer into its row of the window, and
    after a barrier the rows are added up in rank order, in one of two ways:

    - **in the update** (one machine of at most SUM_IN_UPDATE_MAX_RANKS ranks, the default
      there): every rank's update kernel reads all rows and adds them as it updates. One
      barrier per step and no pass of its own: two sets of rows alternate between steps, so
      a rank that finishes first writes the next step's gradients into the other set while
      the slower rank still reads this one (it cannot get two steps ahead: it would have to
      pass the next step's barrier, which waits for the slower rank's update to end).
    - **by columns** (more ranks, or several machines): each rank adds up its own slice of
      the columns of all rows into a shared result row; after another barrier all read the
      result. Across machines, one rank per machine then all-reduces the result through
      MPI (after a third barrier). Each rank reads two rows' worth and writes 1/P of one,
      where summing in the update reads P rows.

    Either way every element is one sum in rank order, computed by the same machine code on
    every rank or read by every rank from one place: identical bits on every rank.
    """

    def __init__(self, comm: Any, length: int, dtype: np.dtype) -> None:
        MPI = mpi()
        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        ranks, rank = self.node.Get_size(), self.node.Get_rank()
        self.machines = comm.allreduce(1 if rank == 0 else 0)
        self.in_update = self.machines == 1 and 1 < ranks <= SUM_IN_UPDATE_MAX_RANKS
        self.name = "shared memory, summed in the update" if self.in_update else "shared memory"
        itemsize = np.dtype(dtype).itemsize
        # One block owned by the node's first rank: two sets of a row per rank (in the
        # update), or a row per rank and the result row (a machine with one rank has nothing
        # to add up: its row is the result).
        n_rows = 2 * ranks if self.in_update else ranks + 1 if ranks > 1 else 1
        nbytes = n_rows * length * itemsize if rank == 0 else 0
        self.window = MPI.Win.Allocate_shared(nbytes, itemsize, comm=self.node)
        memory, _ = self.window.Shared_query(0)
        rows = np.frombuffer(memory, dtype, count=n_rows * length).reshape(n_rows, length)
        self.window.Lock_all(MPI.MODE_NOCHECK)  # a passive epoch for the whole run: Sync works
        if self.in_update:
            sets = [rows[:ranks], rows[ranks:]]
            self.segments = [rows_of_set[rank] for rows_of_set in sets]
            self.sources = [list(rows_of_set) for rows_of_set in sets]
        else:
            self.rows, self.result = rows[:ranks], rows[-1]
            self.segments, self.sources = [rows[rank]], [[self.result]]
        self.current = 0
        for segment in self.segments:
            segment[...] = 0
        cuts = [min(length, -(-length * r // ranks // ALIGN) * ALIGN) for r in range(ranks + 1)]
        self.columns = slice(cuts[rank], cuts[rank + 1])
        self.across = None  # on each machine's first rank, when there are several machines
        leaders = comm.Split(0 if rank == 0 else MPI.UNDEFINED, comm.Get_rank())
        if leaders != MPI.COMM_NULL:
            if self.machines > 1:
                self.across = leaders
            else:
                leaders.Free()
        self.in_place = MPI.IN_PLACE
        self._synced()

    def _synced(self) -> None:
        """Every rank's writes to the window are visible to all after this (MPI's unified
        memory model: a memory barrier, a process barrier, a memory barrier)."""
        self.window.Sync()
        self.node.Barrier()
        self.window.Sync()

    def reduce(self) -> int:
        self._synced()
        if self.in_update:
            done, self.current = self.current, 1 - self.current
            return done
        columns, rows = self.columns, self.rows
        if len(rows) > 1:
            out = self.result[columns]
            np.add(rows[0, columns], rows[1, columns], out=out)
            for row in rows[2:]:
                np.add(out, row[columns], out=out)
            self._synced()
        if self.machines > 1:
            if self.across is not None:
                self.across.Allreduce(self.in_place, self.result)
            self._synced()
        return 0

    def close(self) -> None:
        """Free the window and the communicators (collective over all ranks)."""
        self.window.Unlock_all()
        self.window.Free()
        self.node.Free()
        if self.across is not None:
            self.across.Free()


def reducer(comm: Any, length: int, dtype: np.dtype) -> MpiAllreduce | SharedMemoryAllreduce:
    """The all-reduce for this communicator: through shared memory when some machine runs more
    than one rank, else MPI_Allreduce; GRADFUSE_MPI_ALLREDUCE=mpi or =shared forces one."""
    MPI = mpi()
    chosen = os.environ.get(ALLREDUCE_VARIABLE, "").strip().lower()
    if chosen not in ("", "mpi", "shared"):
        raise ValueError(f"{ALLREDUCE_VARIABLE} must be 'mpi' or 'shared', got {chosen!r}")
    if not chosen:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        shared = comm.allreduce(node.Get_size() > 1, op=MPI.LOR)
        node.Free()
        chosen = "shared" if shared else "mpi"
    return (SharedMemoryAllreduce if chosen == "shared" else MpiAllreduce)(comm, length, dtype)
