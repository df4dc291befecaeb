"""The cyclic garbage collector in long-lived server processes (web and Celery workers).

`start_up_objects_freeze()` runs once a process has loaded what it keeps for its life
(settings, URL resolvers, models, task registry): `gc.freeze()` moves those objects out
of the collector's generations, so a full collection no longer walks them (in a Celery
worker some 170,000 objects: 90-120 ms of CPU every few seconds under API load).

Python's thresholds are kept: collecting the young generation every 20,000 allocations
instead of 700 was measured (three paired runs of `api_single_endorsement`) and made p99
no better, as an earlier, web-only trial had found (docs/performance.md).
"""

import gc


def start_up_objects_freeze() -> None:
    gc.collect()
    gc.freeze()
