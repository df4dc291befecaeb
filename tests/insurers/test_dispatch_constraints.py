"""The database keeps an endorsement in at most one live dispatch, whatever writes the rows."""

import pytest
from django.db import IntegrityError, connection, transaction

from insurers.models import DispatchItem
from insurers.services import dispatch_create, dispatch_idempotency_key, item_idempotency_key
from tests.factories import InsurerFactory

pytestmark = pytest.mark.django_db


def items(*references):
    return [{"reference": r, "kind": "ADD", "payload": {"reference": r}} for r in references]


def test_keys_are_deterministic_and_order_free():
    insurer = InsurerFactory.build(code="acme")
    keys = [item_idempotency_key("T-1"), item_idempotency_key("T-2")]
    assert dispatch_idempotency_key(insurer, keys) == dispatch_idempotency_key(insurer, keys[::-1])
    assert dispatch_idempotency_key(insurer, keys).startswith("dsp-acme-")
    assert item_idempotency_key("T-1") == "itm-T-1"


def test_a_live_item_cannot_join_a_second_dispatch():
    insurer = InsurerFactory()
    dispatch_create(insurer=insurer, items=items("T-1"))
    with pytest.raises(IntegrityError), transaction.atomic():
        dispatch_create(insurer=insurer, items=items("T-1", "T-2"))
    assert DispatchItem.objects.filter(reference="T-2").count() == 0  # nothing half-written


def test_raw_sql_is_refused_too():
    insurer = InsurerFactory()
    first = dispatch_create(insurer=insurer, items=items("T-9"))
    second = dispatch_create(insurer=insurer, items=items("T-10"))
    table = DispatchItem._meta.db_table
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (dispatch_id, reference, kind, payload, idempotency_key, result,"
            " insurer_reference, insurer_member_id, result_code, result_reason, result_data, is_live)"
            " VALUES (%s, 'T-9', 'ADD', '{}', 'itm-T-9', 'PENDING', '', '', '', '', '{}', true)",
            [second.pk],
        )
    # a final item is not live, so the reference can be sent again in a new dispatch
    DispatchItem.objects.filter(dispatch=first).update(result="REJECTED", is_live=False)
    again = dispatch_create(insurer=insurer, items=items("T-9"))
    assert again.items.get().idempotency_key == "itm-T-9"  # the item keeps its key
    assert again.idempotency_key == f"{first.idempotency_key}-g2"  # a new dispatch, the next generation


def test_a_final_item_cannot_stay_live():
    insurer = InsurerFactory()
    dispatch = dispatch_create(insurer=insurer, items=items("T-20"))
    with pytest.raises(IntegrityError), transaction.atomic():
        DispatchItem.objects.filter(dispatch=dispatch).update(result="CONFIRMED")
