"""A member payload as EMS sends it (the contract's fields), for demos, tests and benchmarks."""


def member_payload(*, reference: str, **fields) -> dict:
    """An employee joining the sandbox's gold plan on 1 January 2026; `fields` override."""
    return {
        "reference": reference,
        "action": "ADD",
        "policy_number": "POL-GW-1",
        "employee_code": "E1",
        "relation": "SELF",
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-05-01",
        "gender": "F",
        "email": "asha@example.com",
        "phone": "9800000001",
        "plan_code": "GOLD",
        "sum_insured": 500000,
        "effective_date": "2026-01-01",
        "premium": 1234550,
        "currency": "INR",
        **fields,
    }
