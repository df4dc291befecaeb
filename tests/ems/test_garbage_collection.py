"""`ems.garbage_collection.start_up_objects_freeze`, as web and worker processes call it."""

import gc

from ems.garbage_collection import start_up_objects_freeze


def test_start_up_objects_are_frozen_out_of_the_collector():
    try:
        start_up_objects_freeze()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
