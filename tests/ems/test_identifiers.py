import time

from ems.identifiers import new_tracking_id


def test_tracking_ids_are_unique_sortable_and_not_sequential():
    first = [new_tracking_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_tracking_id()
    assert len(set(first)) == 1000
    assert all(tid.startswith("END-") and len(tid) == 30 for tid in first)
    assert later > max(first)
    assert not all(b > a for a, b in zip(first, first[1:], strict=False))  # random within a millisecond
