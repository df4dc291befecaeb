"""Members' personal data in the exchange log is masked after the retention period, ids kept."""

import datetime

from django.utils import timezone

from ems.audit import EXCHANGES_COLLECTION
from insurers.exchanges import exchanges_mask_expired
from insurers.selectors import exchanges_for_dispatch, exchanges_for_reference


def test_old_bodies_are_masked_and_new_ones_kept(mongo_db):
    now = timezone.now()
    body = {"items": [{"reference": "T-1", "first_name": "Asha", "phone": "+919800000001"}]}
    collection = mongo_db[EXCHANGES_COLLECTION]
    collection.insert_many(
        [
            {"at": now - datetime.timedelta(days=age), "dispatch_id": dispatch_id, "tracking_ids": ["T-1"],
             "request": body, "response": {"ok": True}, "pii_masked": False}
            for age, dispatch_id in ((100, 7), (1, 8))
        ]
    )  # fmt: skip
    assert exchanges_mask_expired(older_than_days=90, database=mongo_db) == 1
    old, new = exchanges_for_dispatch(7)[0], exchanges_for_dispatch(8)[0]
    assert old["request"]["items"][0] == {"reference": "T-1", "first_name": "***", "phone": "***"}
    assert bool(old["pii_masked"])
    assert new["request"] == body
    # a second sweep finds nothing more to do
    assert exchanges_mask_expired(older_than_days=90, database=mongo_db) == 0
    assert [doc["dispatch_id"] for doc in exchanges_for_reference("T-1")] == [8, 7]  # newest first
