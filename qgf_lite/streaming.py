"""Training on a dataset too large for device memory, one slice at a time (OGBench's 100M-transition folders).

``SliceStream`` keeps the slice being trained on in device memory and, in one background thread, loads the next
slice from disk and transfers it to the device while the current one trains (double buffering). ``advance()`` then
swaps them without waiting on the disk, drops the old slice and starts loading the one after. At most two slices
are ever held: the prefetch of slice i+2 starts only once slice i has been dropped.

``prefetch=False`` gives the reference implementation's pattern for comparison: at each swap the next slice is
loaded on the calling thread while training waits (``benchmarks/bench_slices.py`` times both).

``qgf_lite.training.fit`` takes a stream in place of a dataset and calls ``advance()`` every ``rotate_every`` steps;
which slice a step trains on depends only on the step count (``slice_for_step``), so a resumed run sees the same
slices as an uninterrupted one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from qgf_lite.data import TransitionDataset
from qgf_lite.validation import require_positive_int


def _lower_priority(nice: int) -> None:
    # On a CPU backend the loader (decompression, relabelling, copies) competes with XLA's threads for the cores: a
    # higher nice value for this one thread (Linux: per-thread) lets training go first and the load use what is
    # left over in the rotate_every steps it has. Elsewhere, or without permission, it is left as it is.
    import os

    if nice and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
        except OSError:
            pass


def slice_for_step(step: int, rotate_every: int, num_slices: int) -> int:
    """The slice training step ``step`` (0-based count of steps done) uses: the next one every ``rotate_every``."""
    return (int(step) // int(rotate_every)) % int(num_slices)


class SliceStream:
    """Slices 0..num_slices-1 in a ring, the current one on the device and the next one prefetched.

    ``load_slice(i)`` returns slice i as a ``TransitionDataset`` on the device (read, relabelled and transferred:
    the whole cost of a swap); it runs in the background thread when ``prefetch``. Every slice must have the same
    size for the compiled trainer to be reused (a new size compiles once more). ``start`` is the first slice.
    ``resident`` counts the slices the stream holds (at most two) and ``max_resident`` the most it ever held.
    ``loader_nice`` raises the loader thread's nice value (Linux), so that on a CPU training keeps the cores.
    """

    def __init__(
        self,
        num_slices: int,
        load_slice: Callable[[int], TransitionDataset],
        *,
        start: int = 0,
        prefetch: bool = True,
        loader_nice: int = 10,
    ):
        self.num_slices = require_positive_int("num_slices", num_slices)
        if not 0 <= int(start) < self.num_slices:
            raise ValueError(f"`start` must be in [0, {self.num_slices}), got {start}.")
        self._load = load_slice
        self.prefetch = bool(prefetch)
        self._lock = threading.Lock()
        self.resident = 0
        self.max_resident = 0
        self.loads = []  # slice indices in the order they were loaded (tests read it)
        self.wait_s = 0.0  # seconds advance() spent waiting for a slice (disk and transfer not hidden)
        self.loader_nice = int(loader_nice)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self.index = int(start)
        self._current: TransitionDataset | None = self._load_counted(self.index)
        self._start_prefetch()

    # -- bookkeeping
    def _load_counted(self, index: int) -> TransitionDataset:
        dataset = self._load(index)
        if not isinstance(dataset, TransitionDataset):
            raise TypeError(f"load_slice({index}) must return a TransitionDataset, got {type(dataset).__name__}.")
        with self._lock:
            self.resident += 1
            self.max_resident = max(self.max_resident, self.resident)
            self.loads.append(index)
        return dataset

    def _release_current(self) -> None:
        if self._current is not None:
            self._current = None
            with self._lock:
                self.resident -= 1

    @property
    def next_index(self) -> int:
        return (self.index + 1) % self.num_slices

    def _start_prefetch(self) -> None:
        if not self.prefetch or self.num_slices == 1:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="qgf-slice-loader",
                initializer=_lower_priority,
                initargs=(self.loader_nice,),
            )
        self._pending = self._executor.submit(self._load_counted, self.next_index)

    # -- the public interface
    @property
    def current(self) -> TransitionDataset:
        if self._current is None:
            raise RuntimeError("This SliceStream is closed.")
        return self._current

    @property
    def size(self) -> int:
        return self.current.size

    @property
    def obs_dim(self) -> int:
        return self.current.obs_dim

    @property
    def action_dim(self) -> int:
        return self.current.action_dim

    def advance(self) -> TransitionDataset:
        """Make the next slice current (the prefetched one: no wait unless its load is still running) and start
        loading the one after. Returns the new current slice."""
        import time

        if self.num_slices == 1:
            return self.current
        t0 = time.perf_counter()
        if self.prefetch:
            following = self._pending.result()  # re-raises a failed load here, in the training thread
            self._pending = None
            self._release_current()
        else:
            self._release_current()  # the reference pattern frees the old slice, then loads the next one
            following = self._load_counted(self.next_index)
        self.wait_s += time.perf_counter() - t0
        self._current = following
        self.index = self.next_index
        self._start_prefetch()
        return self._current

    def seek(self, index: int) -> TransitionDataset:
        """Make slice ``index`` current (a resumed run's), loading it now if it is not the prefetched one."""
        index = int(index) % self.num_slices
        if index == self.index:
            return self.current
        if index == self.next_index:
            return self.advance()
        if self._pending is not None:
            self._pending.result()
            self._pending = None
            with self._lock:
                self.resident -= 1  # the prefetched slice is not the one wanted: drop it
        self._release_current()
        self._current = self._load_counted(index)
        self.index = index
        self._start_prefetch()
        return self._current

    def close(self) -> None:
        """Drop both slices and stop the loader thread."""
        if self._pending is not None:
            try:
                self._pending.result()
                with self._lock:
                    self.resident -= 1
            except Exception:
                pass
            self._pending = None
        self._release_current()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["SliceStream", "slice_for_step"]
