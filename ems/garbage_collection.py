"""The cyclic garbage collector in long-lived server processes (web and Celery workers).

`start_up_objects_freeze()` runs once a process has loaded what it keeps for its life
(settings, URL resolvers, models, task registry):

- `gc.freeze()` moves those objects out of the collector's generations, so a full
  collection no longer walks them (in a Celery worker some 170,000 objects: 90-120 ms
  of CPU every few seconds under API load).
- The young generation is collected every 20,000 allocations instead of Python's 700.
  Django and DRF leave reference cycles behind every request, and a young collection
  every 700 allocations also promotes the live objects of every request in flight, so
  under load a full collection (15-70 ms with the GIL held, while every request of the
  process waits) came every two or three seconds. Collecting less often promotes far
  less; the garbage waiting between collections stays a few megabytes.
"""

import gc

THRESHOLDS = (20_000, 20, 20)  # Python's default: (700, 10, 10)


def start_up_objects_freeze() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
