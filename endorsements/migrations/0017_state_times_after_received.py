"""Each state's time is on or after the request's arrival, as a CHECK.

Rows that break it are repaired first: file rows stored by the SQLite fallback of
`bulk_writes.rows_insert` had `received_at` stamped by bulk_create's own clock, after the
decision time their other columns and their history carry. The decision time is the true
one, so `received_at` moves back to the earliest state time of the row (each UPDATE lowers
it to one column's value where that is earlier; plain SQL that PostgreSQL and SQLite share).
"""

from django.db import migrations, models

STATE_TIME_FIELDS = (
    "validated_at",
    "on_hold_review_at",
    "on_hold_funds_at",
    "fund_locked_at",
    "sent_at",
    "confirmed_at",
    "activated_at",
    "closed_at",
)
REPAIR = [
    f"UPDATE endorsements_endorsementrequest SET received_at = {field} WHERE {field} < received_at"
    for field in STATE_TIME_FIELDS
]


class Migration(migrations.Migration):
    # The repair's UPDATEs leave PostgreSQL's deferred foreign-key checks pending, and a
    # table with pending trigger events cannot be altered in the same transaction: each
    # step commits on its own (a repair that ran without the CHECK after it is harmless).
    atomic = False
    dependencies = [
        ("endorsements", "0016_batch_heartbeat"),
    ]

    operations = [
        migrations.RunSQL(REPAIR, reverse_sql=migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="endorsementrequest",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("validated_at__isnull", True),
                        ("validated_at__gte", models.F("received_at")),
                        _connector="OR",
                    ),
                    models.Q(
                        ("on_hold_review_at__isnull", True),
                        ("on_hold_review_at__gte", models.F("received_at")),
                        _connector="OR",
                    ),
                    models.Q(
                        ("on_hold_funds_at__isnull", True),
                        ("on_hold_funds_at__gte", models.F("received_at")),
                        _connector="OR",
                    ),
                    models.Q(
                        ("fund_locked_at__isnull", True),
                        ("fund_locked_at__gte", models.F("received_at")),
                        _connector="OR",
                    ),
                    models.Q(
                        ("sent_at__isnull", True), ("sent_at__gte", models.F("received_at")), _connector="OR"
                    ),
                    models.Q(
                        ("confirmed_at__isnull", True),
                        ("confirmed_at__gte", models.F("received_at")),
                        _connector="OR",
                    ),
                    models.Q(
                        ("activated_at__isnull", True),
                        ("activated_at__gte", models.F("received_at")),
                        _connector="OR",
                    ),
                    models.Q(
                        ("closed_at__isnull", True),
                        ("closed_at__gte", models.F("received_at")),
                        _connector="OR",
                    ),
                ),
                name="endorsement_states_after_received",
            ),
        ),
    ]
