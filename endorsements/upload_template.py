"""The CSV template HR downloads, and the column guide's example: the header row and three
example rows (an ADD, a DELETE, a CORRECTION) in this employer's own policy number, plan
code and sum insured, effective today (inside the policy's period).

The example rows name employees `EXAMPLE-…` (`columns.EXAMPLE_CODE_PREFIX`): intake refuses
such a row as `example_row`, and a file of nothing else as `template_unchanged`, so the
template uploaded as it is adds no fake members. An employer without a policy gets the
header alone.
"""

import csv
import io
from datetime import date

from endorsements.columns import COLUMNS, EXAMPLE_CODE_PREFIX
from endorsements.models import Policy


def _example_policy(policies: list[Policy], today: date) -> Policy | None:
    """The policy HR most likely writes for: active and running today, else active, else any."""
    for accept in (
        lambda p: p.is_active and p.start_date <= today <= p.end_date,
        lambda p: p.is_active,
        lambda p: True,
    ):
        for policy in policies:
            if accept(policy):
                return policy
    return None


def example_rows(*, policies: list[Policy], today: date) -> list[list[str]]:
    """The example rows, in the order of COLUMNS; none without a policy."""
    policy = _example_policy(policies, today)
    if policy is None:
        return []
    plans = list(policy.plans.all())
    plan_code = plans[0].code if plans else ""
    options = plans[0].sum_insured_options if plans else []
    sum_insured = str(min(options)) if options else ""
    effective = min(max(today, policy.start_date), policy.end_date).isoformat()
    joiner = f"{EXAMPLE_CODE_PREFIX}1001"
    rows = [
        {
            "action": "ADD",
            "employee_code": joiner,
            "relation": "SELF",
            "first_name": "Asha",
            "last_name": "Rao",
            "date_of_birth": "1990-01-15",
            "gender": "F",
            "email": "asha.rao@example.com",
            "phone": "+919812345678",
            "date_of_joining": effective,
            "effective_date": effective,
            "policy_number": policy.number,
            "plan_code": plan_code,
            "sum_insured": sum_insured,
        },
        {
            "action": "DELETE",
            "employee_code": f"{EXAMPLE_CODE_PREFIX}0042",
            "relation": "SELF",
            "effective_date": effective,
            "policy_number": policy.number,
        },
        {
            "action": "CORRECTION",
            "employee_code": joiner,
            "relation": "SELF",
            "email": "asha@example.com",
            "effective_date": effective,
            "policy_number": policy.number,
        },
    ]
    return [[row.get(column, "") for column in COLUMNS] for row in rows]


def template_csv(*, policies: list[Policy], today: date) -> str:
    """The template file: the header, then the example rows (CRLF line ends, as Excel writes)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(example_rows(policies=policies, today=today))
    return buffer.getvalue()
