"""Read and preprocess images on a few threads while the loop runs: batches in order, a bounded read-ahead.

Pillow releases the GIL while it decodes and resizes, so a small thread pool overlaps that work with the backend's
loop (ONNX Runtime, OpenVINO and TensorRT release it too); what it costs on 12 MP photos: benchmarks/README.md.
:class:`Prefetcher` cuts the inputs into fixed batches (the same batches a serial run makes, so the backend sees
the same calls and the outputs are bit-identical), reads up to ``depth`` batches ahead of the one the consumer
holds, and hands them over in input order. Memory stays bounded: while the consumer holds a batch, at most ``depth``
more are read or being read (``depth`` + 1 while it asks for the next one), and each worker holds at most one
full-size decode.

Per-input errors: an :class:`~restyle_rt.errors.InputError` from ``load`` (an unreadable file, no face found) is
kept with its batch (:attr:`Batch.errors`), so the consumer reports and skips it exactly as a serial run would;
any other exception is raised to the consumer when it reaches that batch, after the batches before it.

Shutdown: :meth:`Prefetcher.close` (the end of its ``with`` block, or the end of iteration, or an exception such as
Ctrl-C / SIGTERM raised while the consumer waits) cancels the reads not started and waits for the ones running (at
most one image per worker); no thread outlives it.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from ..errors import InputError

T = TypeVar("T")
DEFAULT_DEPTH = 2  # batches read ahead of the one being inverted
MAX_DEFAULT_WORKERS = 4
THREAD_PREFIX = "restyle-rt-read"


def default_workers() -> int:
    """Reader threads by default: the CPUs this process may use, at most :data:`MAX_DEFAULT_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus))


@dataclass
class Batch(Generic[T]):
    """One batch of inputs, preprocessed.

    Attributes:
        items: the inputs that loaded, in input order.
        x: [len(items), ...] their preprocessed arrays stacked (None when none loaded).
        errors: (input, InputError) for each input that did not load, in input order.
        size: how many inputs the batch covered (loaded + failed).
    """

    items: list[T]
    x: np.ndarray | None
    errors: list[tuple[T, InputError]] = field(default_factory=list)
    size: int = 0


class Prefetcher(Generic[T]):
    """Iterate over ``items`` in batches of ``batch``, each input turned into an array by ``load``.

    Args:
        items: the inputs (paths, or anything ``load`` takes), in order.
        load: ``load(item) -> array`` (all of one shape and dtype); raises InputError for an unusable input. Called
            from reader threads when ``workers`` > 0: it must be thread-safe.
        batch: inputs per batch (>= 1); the last batch may be shorter.
        workers: reader threads; 0 reads each batch on the calling thread when it is asked for (no threads);
            None: :func:`default_workers`.
        depth: batches read ahead of the one the consumer holds (>= 1; used when ``workers`` > 0).

    Use as a context manager (or call :meth:`close`) so that a consumer that stops early shuts the readers down;
    iterating to the end closes it too. Iterate once.

    Raises:
        InputError: ``batch``, ``workers`` or ``depth`` out of range.
    """

    def __init__(
        self,
        items: Sequence[T],
        load: Callable[[T], np.ndarray],
        batch: int,
        workers: int | None = None,
        depth: int = DEFAULT_DEPTH,
    ):
        workers = default_workers() if workers is None else workers
        for what, v, low in (("batch", batch, 1), ("workers", workers, 0), ("depth", depth, 1)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise InputError(f"{what} must be an integer >= {low}, got {v!r}")
        self.items, self.load = list(items), load
        self.batch, self.workers, self.depth = int(batch), int(workers), int(depth)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: collections.deque[list[tuple[T, Future]]] = collections.deque()
        self._closed = self._started = False

    def __iter__(self) -> Iterator[Batch[T]]:
        if self._closed or self._started:
            raise InputError("a Prefetcher iterates once (this one was iterated or closed); make a new one")
        self._started = True
        return self._serial() if self.workers == 0 else self._threaded()

    def _chunks(self) -> list[list[T]]:
        return [self.items[i : i + self.batch] for i in range(0, len(self.items), self.batch)]

    def _serial(self) -> Iterator[Batch[T]]:
        try:
            for chunk in self._chunks():
                yield _collect([(it, _call(self.load, it)) for it in chunk])
        finally:
            self.close()

    def _threaded(self) -> Iterator[Batch[T]]:
        chunks = self._chunks()
        self._pool = ThreadPoolExecutor(min(self.workers, max(1, len(self.items))), thread_name_prefix=THREAD_PREFIX)
        ahead = min(len(chunks), self.depth + 1)  # the first batch, and `depth` batches behind it
        try:
            for chunk in chunks[:ahead]:
                self._submit(chunk)
            nxt = ahead
            while self._pending:
                futures = self._pending.popleft()
                b = _collect([(it, f.result()) for it, f in futures])  # waits, in input order; re-raises
                yield b
                if self._closed:  # closed by the consumer while it held `b`
                    return
                if nxt < len(chunks):  # the consumer is done with `b`: read one more batch ahead
                    self._submit(chunks[nxt])
                    nxt += 1
        finally:
            self.close()

    def _submit(self, chunk: list[T]) -> None:
        assert self._pool is not None
        self._pending.append([(it, self._pool.submit(_call, self.load, it)) for it in chunk])

    def close(self) -> None:
        """Cancel the reads not started, wait for the running ones (one image per worker at most). Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        for futures in self._pending:
            for _, f in futures:
                f.cancel()
        self._pending.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


class _Failed:
    """An InputError raised by ``load`` for one input (kept with its batch, not raised)."""

    __slots__ = ("error",)

    def __init__(self, error: InputError):
        self.error = error


def _call(load: Callable, item):
    """``load(item)``, an InputError returned as :class:`_Failed`; other exceptions propagate."""
    try:
        return load(item)
    except InputError as e:
        return _Failed(e)


def _collect(results: list[tuple[T, object]]) -> Batch[T]:
    items, arrays, errors = [], [], []
    for it, r in results:
        if isinstance(r, _Failed):
            errors.append((it, r.error))
        else:
            items.append(it)
            arrays.append(r)
    return Batch(items, np.stack(arrays) if arrays else None, errors, len(results))
