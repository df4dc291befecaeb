"""`ems.garbage_collection.start_up_objects_freeze`, as web and worker processes call it."""

import gc

from ems.garbage_collection import THRESHOLDS, start_up_objects_freeze


def test_start_up_objects_are_frozen_and_young_collections_are_rarer():
    previous = gc.get_threshold()
    try:
        start_up_objects_freeze()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*previous)
