"""ANSI X12 834 benefit enrollment (005010X220A1), written for SFTP insurers.

One file is one interchange (ISA/IEA) holding one functional group (GS/GE) holding one
transaction set (ST/SE). Each dispatch item is one member loop (2000: INS, REF; 2100A:
NM1, PER, DMG; 2300: HD, DTP):

- INS03 / HD01 maintenance type: `021` add, `024` cancel, `001` change;
- DTP `348` benefit begin (add, change), `349` benefit end (cancel); AMT `P3` the
  premium we expect, in major units (a cancel's refund as a positive amount);
- REF `0F` is the employee code (the subscriber's id), REF `1L` the policy number and
  REF `ZZ` our tracking reference, so a response can name the item it answers.

The interchange control number and the file's date are derived from the dispatch, so a
retry of the same dispatch writes byte-identical content. `document_read` is the inverse
the sandbox insurer uses; the tests validate the writer with an independent parser.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

SEGMENT_END = "~"
ELEMENT_SEPARATOR = "*"
COMPONENT_SEPARATOR = ":"
REPETITION_SEPARATOR = "^"
VERSION = "005010X220A1"

MAINTENANCE_BY_ACTION = {"ADD": "021", "DELETE": "024", "CORRECTION": "001"}
ACTION_BY_MAINTENANCE = {code: action for action, code in MAINTENANCE_BY_ACTION.items()}
# INS04 maintenance reason: initial enrollment, termination of benefits, change of identifying data
REASON_BY_ACTION = {"ADD": "28", "DELETE": "07", "CORRECTION": "25"}
RELATIONSHIP_BY_RELATION = {
    "SELF": "18",
    "SPOUSE": "01",
    "CHILD": "19",
    "PARENT": "03",
    "PARENT_IN_LAW": "G9",
}
RELATION_BY_RELATIONSHIP = {code: relation for relation, code in RELATIONSHIP_BY_RELATION.items()}
GENDER_BY_CODE = {"M": "M", "F": "F", "X": "U"}


@dataclass(frozen=True)
class Parties:
    """Who sends and who receives: interchange ids and the sponsor/payer names (N1)."""

    sender_id: str
    receiver_id: str
    sponsor_name: str
    sponsor_tax_id: str
    payer_name: str
    payer_id: str


def control_number(dispatch_key: str) -> int:
    """A nine-digit interchange control number, the same for every retry of a dispatch."""
    return int(hashlib.sha256(dispatch_key.encode()).hexdigest()[:12], 16) % 1_000_000_000 or 1


def _clean(value: object) -> str:
    """X12 text: no separators inside an element."""
    text = str(value or "")
    for separator in (SEGMENT_END, ELEMENT_SEPARATOR, COMPONENT_SEPARATOR, REPETITION_SEPARATOR):
        text = text.replace(separator, " ")
    return text.strip()


def _date(iso: str) -> str:
    return date.fromisoformat(iso).strftime("%Y%m%d")


def _amount(minor_units: int) -> str:
    """X12 decimal in major units; a cancel's refund is carried as a positive amount."""
    return str((Decimal(abs(minor_units)) / 100).quantize(Decimal("0.01")))


def _segment(*elements: object) -> str:
    parts = [str(element) for element in elements]
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return ELEMENT_SEPARATOR.join(parts) + SEGMENT_END


def _member_segments(item: dict) -> list[str]:
    action = item["action"]
    maintenance = MAINTENANCE_BY_ACTION[action]
    is_subscriber = item.get("relation", "SELF") == "SELF"
    relationship = RELATIONSHIP_BY_RELATION.get(item.get("relation", "SELF"), "G8")
    segments = [
        _segment(
            "INS",
            "Y" if is_subscriber else "N",
            relationship,
            maintenance,
            REASON_BY_ACTION[action],
            "A",
            "",
            "",
            "FT" if is_subscriber else "",
        ),
        _segment("REF", "0F", _clean(item["employee_code"])),
        _segment("REF", "1L", _clean(item["policy_number"])),
        _segment("REF", "ZZ", _clean(item["reference"])),
        _segment("NM1", "IL", "1", _clean(item.get("last_name")), _clean(item.get("first_name"))),
    ]
    contacts = []
    if item.get("phone"):
        contacts += ["TE", _clean(item["phone"])]
    if item.get("email"):
        contacts += ["EM", _clean(item["email"])]
    if contacts:
        segments.append(_segment("PER", "IP", "", *contacts))
    if item.get("date_of_birth"):
        gender = GENDER_BY_CODE.get(item.get("gender") or "", "U")
        segments.append(_segment("DMG", "D8", _date(item["date_of_birth"]), gender))
    segments.append(
        _segment(
            "HD", maintenance, "", "HLT", _clean(item.get("plan_code")), "EMP" if is_subscriber else "FAM"
        )
    )
    qualifier = "349" if action == "DELETE" else "348"
    segments.append(_segment("DTP", qualifier, "D8", _date(item["effective_date"])))
    if item.get("premium") not in (None, ""):
        segments.append(_segment("AMT", "P3", _amount(int(item["premium"]))))
    return segments


def document_write(
    *, items: Sequence[dict], dispatch_key: str, created_at: datetime, parties: Parties
) -> str:
    """The 834 document for these payloads (one line per segment, for people reading it)."""
    number = control_number(dispatch_key)
    short_date, long_date, clock = (
        created_at.strftime("%y%m%d"),
        created_at.strftime("%Y%m%d"),
        created_at.strftime("%H%M"),
    )
    body = [
        _segment("ST", "834", "0001", VERSION),
        _segment("BGN", "00", _clean(dispatch_key)[:50], long_date, clock, "", "", "", "2"),
        _segment("N1", "P5", _clean(parties.sponsor_name), "FI", _clean(parties.sponsor_tax_id)),
        _segment("N1", "IN", _clean(parties.payer_name), "FI", _clean(parties.payer_id)),
    ]
    for item in items:
        body += _member_segments(item)
    body.append(_segment("SE", len(body) + 1, "0001"))
    header = [
        _segment(
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            "ZZ",
            _clean(parties.sender_id)[:15].ljust(15),
            "ZZ",
            _clean(parties.receiver_id)[:15].ljust(15),
            short_date,
            clock,
            REPETITION_SEPARATOR,
            "00501",
            f"{number:09d}",
            "0",
            "P",
            COMPONENT_SEPARATOR,
        ),
        _segment(
            "GS",
            "BE",
            _clean(parties.sender_id),
            _clean(parties.receiver_id),
            long_date,
            clock,
            number,
            "X",
            VERSION,
        ),
    ]
    trailer = [_segment("GE", "1", number), _segment("IEA", "1", f"{number:09d}")]
    return "\n".join(header + body + trailer) + "\n"


def _iso(d8: str) -> str:
    return f"{d8[:4]}-{d8[4:6]}-{d8[6:8]}"


def document_read(text: str) -> list[dict]:
    """The member loops of an 834 as payload-like dicts (the receiving insurer's view)."""
    segments = [segment.strip() for segment in text.split(SEGMENT_END) if segment.strip()]
    members: list[dict] = []
    for segment in segments:
        elements = segment.split(ELEMENT_SEPARATOR)
        tag = elements[0]
        if tag == "INS":
            members.append(
                {
                    "action": ACTION_BY_MAINTENANCE.get(elements[3], ""),
                    "relation": RELATION_BY_RELATIONSHIP.get(elements[2], ""),
                }
            )
            continue
        if not members:
            continue
        member = members[-1]
        if tag == "REF":
            key = {"0F": "employee_code", "1L": "policy_number", "ZZ": "reference"}.get(elements[1])
            if key:
                member[key] = elements[2]
        elif tag == "NM1" and elements[1] == "IL":
            member["last_name"] = elements[3] if len(elements) > 3 else ""
            member["first_name"] = elements[4] if len(elements) > 4 else ""
        elif tag == "DMG":
            member["date_of_birth"] = _iso(elements[2])
            member["gender"] = {"U": "X"}.get(elements[3], elements[3]) if len(elements) > 3 else ""
        elif tag == "HD":
            member["plan_code"] = elements[4] if len(elements) > 4 else ""
        elif tag == "DTP" and elements[1] in ("348", "349"):
            member["effective_date"] = _iso(elements[3])
        elif tag == "AMT" and elements[1] == "P3":
            member["premium"] = int(Decimal(elements[2]) * 100)
    return members
