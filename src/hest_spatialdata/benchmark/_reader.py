"""Patches read ahead of the encoder: a thread that opens each store and cuts its batches into a bounded queue.

:func:`~hest_spatialdata.benchmark.embed` encodes a batch while this thread reads the next ones. The reading itself
is the patch dataset's (``__getitems__``: a batch decoded and resampled in the dataset's thread pool, a band of
chunks cut ahead); the thread only asks for the batches, in order, stacks each into one array and runs the encoder's
``prepare`` on it (for torch encoders a tensor, pinned on CUDA, so that the copy to the GPU is a non-blocking DMA).
At most ``depth`` batches wait in the queue: memory stays bounded whatever the cohort, and the reader stops when the
encoder lags.

Stores are read one after the other, in the order given; a store that fails to open or read is reported through
its own entry (the exception), and the reader goes on with the next store. Order within a store is the order of its
indices, so the embeddings are those of the serial loop, row for row.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Batches waiting for the encoder at most (each 64 x 224 x 224 x 3 bytes = 9.6 MB at the default size).
QUEUE_DEPTH = 4
#: Seconds between two looks at the stop flag while the queue is full (or empty).
_POLL_S = 0.1


@dataclass
class StorePlan:
    """What the reader needs of one store: its dataset, the items to embed (in order) and anything the writer needs.

    Parameters
    ----------
    dataset
        Anything with ``__getitems__(indices) -> [(image, ...), ...]`` (the patch dataset of this store).
    indices
        Items of ``dataset`` to read, in this order.
    info
        Passed through to the consumer (e.g. the barcodes and the spot rule).
    """

    dataset: Any
    indices: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoreBatches:
    """One store as the consumer sees it: its plan (or why it could not be opened) and its batches, in order.

    Iterating :meth:`batches` yields ``(n, batch)``; a read error in the middle of the store is raised there.
    """

    sample_id: str
    plan: StorePlan | None
    error: BaseException | None
    _reader: BatchReader = field(repr=False)
    _done: bool = False

    def batches(self) -> Iterator[tuple[int, Any]]:
        """``(number of patches, batch)`` for every batch of the store (the reader's ``prepare`` of the stack)."""
        while not self._done:
            kind, payload = self._reader._next(self.sample_id)
            if kind == "end":
                self._done = True
            elif kind == "error":
                self._done = True
                raise payload
            else:
                yield payload

    def drain(self) -> None:
        """Drop what is left of this store (its encoder failed): the reader skips to the next store."""
        self._reader._skip.add(self.sample_id)
        while not self._done:
            kind, _ = self._reader._next(self.sample_id)
            self._done = kind in ("end", "error")


class BatchReader:
    """Read the batches of several stores in a thread, ahead of their consumer; a context manager.

    Parameters
    ----------
    sample_ids
        The stores, in the order they are read.
    open_store
        ``sample_id -> StorePlan`` (run in the reader thread: opening a store overlaps the encoder too).
    batch_size
        Patches per batch.
    prepare
        ``stacked (B, H, W, 3) uint8 -> batch`` for the consumer, in the reader thread (the encoder's CPU half: a
        torch tensor, pinned for CUDA); default: the stack itself.
    depth
        Batches read ahead at most.
    """

    def __init__(
        self,
        sample_ids: Sequence[str],
        open_store: Callable[[str], StorePlan],
        batch_size: int,
        *,
        prepare: Callable[[np.ndarray], Any] | None = None,
        depth: int = QUEUE_DEPTH,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.sample_ids = list(sample_ids)
        self._open_store, self.batch_size = open_store, int(batch_size)
        self._prepare = prepare or (lambda stacked: stacked)
        self._queue: queue.Queue[tuple[str | None, str, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._skip: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="hest-embed-reader", daemon=True)

    def __enter__(self) -> BatchReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the reader (it finishes the batch it is cutting) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # a reader blocked on a full queue gets a slot, sees the flag
                self._queue.get_nowait()
            self._thread.join(_POLL_S)

    def stores(self) -> Iterator[StoreBatches]:
        """Each store in turn; whatever of a store its consumer did not read is dropped before the next one."""
        for sample_id in self.sample_ids:
            kind, payload = self._next(sample_id)
            if kind == "error":
                yield StoreBatches(sample_id, None, payload, self, _done=True)
                continue
            store = StoreBatches(sample_id, payload, None, self)
            yield store
            store.drain()

    # ---------------------------------------------------------------------------------------- reader thread

    def _run(self) -> None:
        for sample_id in self.sample_ids:
            if self._stop.is_set():
                return
            try:
                plan = self._open_store(sample_id)
                self._put(sample_id, "open", plan)
                for start in range(0, len(plan.indices), self.batch_size):
                    if self._stop.is_set() or sample_id in self._skip:
                        break
                    chunk = plan.indices[start : start + self.batch_size]
                    self._put(sample_id, "batch", (len(chunk), self._prepare(self._stack(plan.dataset, chunk))))
                plan.dataset = None  # the store's cache goes before the next store's fills
                self._put(sample_id, "end", None)
            except Exception as e:  # noqa: BLE001 - reported in the store's entry; the next store is read
                self._put(sample_id, "error", e)

    def _stack(self, dataset: Any, chunk: np.ndarray) -> np.ndarray:
        return np.stack([item[0] for item in dataset.__getitems__(chunk.tolist())])

    def _put(self, sample_id: str, kind: str, payload: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put((sample_id, kind, payload), timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _next(self, sample_id: str) -> tuple[str, Any]:
        """The next entry of ``sample_id`` (the reader sends each store's entries in order, stores in turn)."""
        while True:
            try:
                got, kind, payload = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the patch reader stopped before the end of the stores") from None
                continue
            if got != sample_id:  # cannot happen: entries come in store order
                raise RuntimeError(f"patch reader out of order: {got} while reading {sample_id}")
            return kind, payload
