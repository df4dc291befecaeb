"""insurers/webhooks.py: the signature scheme, unit by unit (the doors are tested in test_webhook_api)."""

import pytest

from insurers.webhooks import (
    SignatureError,
    SignatureExpired,
    SignatureMalformed,
    SignatureMissing,
    signature_compute,
    signature_header,
    signature_parse,
    signature_verify,
)

BODY = b'{"event_id":"e1","type":"endorsement.accepted","tracking_id":"T1"}'
NOW = 1_800_000_000


def test_compute_is_hmac_sha256_of_timestamp_dot_body():
    # computed independently: printf '%s' '1800000000.{}' | openssl dgst -sha256 -hmac s3cret
    expected = "1cd77f07c7f231a8a17cd9bc413e578ccb209c24eb17a0577ce1eb9218a4f3ed"
    assert signature_compute("s3cret", NOW, b"{}") == expected


def test_header_verifies_and_returns_its_timestamp():
    header = signature_header(["primary"], BODY, timestamp=NOW)
    assert signature_verify(header=header, body=BODY, secrets=["primary", ""], now=NOW) == NOW


def test_any_of_several_v1_matches_either_secret():
    header = signature_header(["old", "new"], BODY, timestamp=NOW)
    assert signature_verify(header=header, body=BODY, secrets=["new"], now=NOW) == NOW
    assert signature_verify(header=header, body=BODY, secrets=["unrelated", "old"], now=NOW) == NOW


@pytest.mark.parametrize("skew", [301, -301])
def test_timestamps_beyond_300_seconds_either_way_are_expired(skew):
    header = signature_header(["primary"], BODY, timestamp=NOW + skew)
    with pytest.raises(SignatureExpired):
        signature_verify(header=header, body=BODY, secrets=["primary"], now=NOW)


@pytest.mark.parametrize("skew", [300, -300])
def test_timestamps_at_300_seconds_are_accepted(skew):
    header = signature_header(["primary"], BODY, timestamp=NOW + skew)
    assert signature_verify(header=header, body=BODY, secrets=["primary"], now=NOW) == NOW + skew


def test_missing_header():
    with pytest.raises(SignatureMissing):
        signature_parse(None)
    with pytest.raises(SignatureMissing):
        signature_parse("")


@pytest.mark.parametrize(
    "header",
    [
        "v1=" + "a" * 64,  # no t
        f"t={NOW}",  # no v1
        f"t=abc,v1={'a' * 64}",  # t not digits
        f"t={NOW},v1=xyz",  # v1 not hex
        f"t={NOW},v1={'a' * 63}",  # v1 too short
        f"t={NOW},t={NOW},v1={'a' * 64}",  # two t
        f"t={NOW};v1={'a' * 64}",  # wrong separator
        f"t={NOW}," + ",".join([f"v1={'a' * 64}"] * 9),  # more v1 than any rotation needs
        "Bearer abc",
    ],
)
def test_malformed_headers(header):
    with pytest.raises(SignatureMalformed):
        signature_parse(header)


def test_body_changed_after_signing_fails():
    header = signature_header(["primary"], BODY, timestamp=NOW)
    with pytest.raises(SignatureError) as refused:
        signature_verify(header=header, body=BODY.replace(b"T1", b"T2"), secrets=["primary"], now=NOW)
    assert refused.value.code == "signature_invalid"
    assert refused.value.status == 401


def test_a_blank_secret_never_verifies():
    header = signature_header([""], BODY, timestamp=NOW)
    with pytest.raises(SignatureError):
        signature_verify(header=header, body=BODY, secrets=["", ""], now=NOW)


def test_unknown_schemes_beside_v1_are_ignored():
    header = signature_header(["primary"], BODY, timestamp=NOW) + ",v0=deadbeef"
    assert signature_verify(header=header, body=BODY, secrets=["primary"], now=NOW) == NOW
