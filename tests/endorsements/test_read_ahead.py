"""`read_ahead`: the items of a generator, in order, produced in a thread a few items ahead."""

import threading

import pytest

from endorsements.read_ahead import read_ahead


def test_items_arrive_in_order_and_the_producer_stays_at_most_depth_ahead():
    produced = []

    def items():
        for n in range(20):
            produced.append(n)
            yield n

    seen = []
    for item in read_ahead(items(), depth=2):
        seen.append(item)
        # the producer may hold `depth` waiting items plus the one it is trying to hand over
        assert len(produced) - len(seen) <= 3
    assert seen == list(range(20))


def test_an_error_in_the_producer_is_raised_in_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("row 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="row 3 is broken"):
        for item in read_ahead(items(), depth=1):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    finished = threading.Event()

    def items():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            finished.set()

    for item in read_ahead(items(), depth=2):
        if item == 3:
            break
    assert finished.wait(5)
