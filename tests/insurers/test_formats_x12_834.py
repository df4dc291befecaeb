"""insurers/formats/x12_834.py: the 834 is checked by an independent X12 parser (pyx12)."""

import io
from datetime import datetime

import pyx12.error_handler
import pyx12.params
import pyx12.x12context
import pyx12.x12n_document

from insurers.formats import x12_834
from insurers.sandbox.samples import member_payload

PARTIES = x12_834.Parties(
    sender_id="EMS",
    receiver_id="SANDBOX",
    sponsor_name="Acme Widgets",
    sponsor_tax_id="123456789",
    payer_name="Sandbox Insurance",
    payer_id="987654321",
)
ITEMS = [
    member_payload(reference="EN-0001", policy_number="POL-1", email="asha@example.com", premium=1200000),
    member_payload(
        reference="EN-0002",
        action="DELETE",
        relation="CHILD",
        first_name="Ravi",
        date_of_birth="2015-07-09",
        gender="M",
        email="",
        phone="",
        policy_number="POL-1",
        effective_date="2026-03-31",
        premium=-300000,
    ),
    member_payload(
        reference="EN-0003",
        action="CORRECTION",
        employee_code="E2",
        relation="SPOUSE",
        first_name="Meera",
        last_name="Iyer",
        date_of_birth="1988-12-31",
        gender="X",
        email="",
        phone="",
        policy_number="POL-1",
        effective_date="2026-02-15",
        premium=0,
    ),
]


def _document() -> str:
    return x12_834.document_write(
        items=ITEMS,
        dispatch_key="dsp-sandbox-0123abcd",
        created_at=datetime(2026, 1, 2, 9, 30),
        parties=PARTIES,
    )


def test_the_834_passes_pyx12_validation_against_005010X220A1():
    # Given an 834 for an add, a cancel and a change
    document = _document()
    acknowledgement = io.StringIO()

    # When pyx12 validates it against its own 005010X220A1 map
    valid = pyx12.x12n_document.x12n_document(
        pyx12.params.params(), io.StringIO(document), acknowledgement, None
    )

    # Then it is valid and the 999 accepts the transaction set and the group
    assert valid is True
    segments = acknowledgement.getvalue().replace("\n", "").split("~")
    assert "AK2*834*0001*005010X220A1" in segments
    assert "IK5*A" in segments
    assert "AK9*A*1*1*1" in segments


def test_member_loops_carry_the_maintenance_codes_and_coverage_dates():
    reader = pyx12.x12context.X12ContextReader(
        pyx12.params.params(), pyx12.error_handler.errh_null(), io.StringIO(_document())
    )
    members, premiums = [], []
    for loop in reader.iter_segments("2000"):
        if loop.id != "2000":
            continue
        dates = {node.get_value("DTP01"): node.get_value("DTP03") for node in loop.select("2300/DTP")}
        premiums.append((loop.get_value("2300/AMT01"), loop.get_value("2300/AMT02")))
        members.append(
            (
                loop.get_value("INS01"),
                loop.get_value("INS02"),
                loop.get_value("INS03"),
                loop.get_value("2300/HD01"),
                {node.get_value("REF01"): node.get_value("REF02") for node in loop.select("REF")},
                loop.get_value("2100A/NM103"),
                loop.get_value("2100A/DMG02"),
                loop.get_value("2100A/DMG03"),
                dates,
            )
        )

    assert premiums == [("P3", "12000.00"), ("P3", "3000.00"), ("P3", "0.00")]
    assert members == [
        (
            "Y",
            "18",
            "021",
            "021",
            {"0F": "E1", "1L": "POL-1", "ZZ": "EN-0001"},
            "Rao",
            "19900501",
            "F",
            {"348": "20260101"},
        ),
        (
            "N",
            "19",
            "024",
            "024",
            {"0F": "E1", "1L": "POL-1", "ZZ": "EN-0002"},
            "Rao",
            "20150709",
            "M",
            {"349": "20260331"},
        ),
        (
            "N",
            "01",
            "001",
            "001",
            {"0F": "E2", "1L": "POL-1", "ZZ": "EN-0003"},
            "Iyer",
            "19881231",
            "U",
            {"348": "20260215"},
        ),
    ]


def test_the_envelope_counts_and_control_numbers_match():
    segments = [line.rstrip("~").split("*") for line in _document().splitlines()]
    number = x12_834.control_number("dsp-sandbox-0123abcd")
    isa, gs, st, se, ge, iea = (
        next(s for s in segments if s[0] == tag) for tag in ("ISA", "GS", "ST", "SE", "GE", "IEA")
    )
    assert isa[13] == f"{number:09d}" == iea[2]
    assert gs[6] == str(number) == ge[2]
    assert gs[8] == st[3] == "005010X220A1"
    assert int(se[1]) == segments.index(se) - segments.index(st) + 1


def test_a_retry_of_the_same_dispatch_writes_the_same_bytes():
    assert _document() == _document()


def test_the_sandbox_reads_back_what_was_written():
    members = x12_834.document_read(_document())

    assert [(m["reference"], m["action"], m["relation"], m["effective_date"]) for m in members] == [
        ("EN-0001", "ADD", "SELF", "2026-01-01"),
        ("EN-0002", "DELETE", "CHILD", "2026-03-31"),
        ("EN-0003", "CORRECTION", "SPOUSE", "2026-02-15"),
    ]
    assert [m["premium"] for m in members] == [1200000, 300000, 0]
    assert members[2]["gender"] == "X"
    assert members[0]["date_of_birth"] == "1990-05-01"
