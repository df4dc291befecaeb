"""Run a generator one or more items ahead, in a thread.

`read_ahead(items, depth)` yields what `items` yields, in order, while a thread already
produces the next `depth` items. A file's next chunk is read and checked (pure Python, no
database) while the current chunk waits on PostgreSQL, which releases the GIL, so the two
overlap. Memory stays bounded: at most `depth` items wait. An exception in the producer
is raised in the consumer at the same point; a consumer that stops early (or fails) stops
the producer.
"""

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    waiting: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put((_DONE, error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a stopped generator closes its file now, not when collected

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = waiting.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
