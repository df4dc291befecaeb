"""insurers/formats/csv_template.py: files laid out by an insurer's column template."""

import csv
import io

import pytest

from insurers.formats import csv_template

TEMPLATE = [
    ["MemberRef", "reference"],
    ["Action", "action"],
    ["EmpNo", "employee_code"],
    ["SumInsured", "sum_insured"],
]


def test_the_file_follows_the_insurers_headers_and_order():
    rows = [
        {
            "reference": "EN-1",
            "action": "ADD",
            "employee_code": "E,1",
            "sum_insured": 500000,
            "email": "x@y.z",
        },
        {"reference": "EN-2", "action": "DELETE", "employee_code": 'E"2', "sum_insured": None},
    ]

    body = csv_template.document_write(rows=rows, columns=TEMPLATE)

    assert body.endswith("\r\n")
    assert list(csv.reader(io.StringIO(body))) == [
        ["MemberRef", "Action", "EmpNo", "SumInsured"],
        ["EN-1", "ADD", "E,1", "500000"],
        ["EN-2", "DELETE", 'E"2', ""],
    ]


def test_reading_maps_headers_back_to_fields_whatever_their_order():
    body = "EmpNo,SumInsured,Extra,Action,MemberRef\r\nE1,100,zz,ADD,EN-1\r\n\r\n"

    assert csv_template.document_read(text=body, columns=TEMPLATE) == [
        {"reference": "EN-1", "action": "ADD", "employee_code": "E1", "sum_insured": "100"}
    ]


def test_a_file_missing_a_templated_header_is_refused():
    with pytest.raises(csv_template.TemplateError, match="missing columns: EmpNo"):
        csv_template.document_read(text="MemberRef,Action,SumInsured\r\nEN-1,ADD,1\r\n", columns=TEMPLATE)
