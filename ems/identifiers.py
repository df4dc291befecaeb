"""Tracking ids: unique, time-sortable, not sequential integers.

`END-` + a 26-character Crockford base32 ULID: 10 characters of milliseconds since the
epoch (48 bits) then 16 characters of randomness (80 bits). Ids sort by creation time (to
the millisecond) and cannot be guessed from a neighbour. Within one millisecond, order is
random. The random part is RFC 4648 base32 of 10 random bytes mapped onto Crockford's
alphabet, which is the same encoding ULID specifies and several times faster than
encoding a 128-bit integer digit by digit (a 100,000-row file needs 100,000 ids).
"""

import base64
import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RFC4648 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_CROCKFORD = bytes.maketrans(_RFC4648, _ALPHABET.encode())


def _time_part(milliseconds: int) -> str:
    chars = []
    for _ in range(10):
        chars.append(_ALPHABET[milliseconds & 31])
        milliseconds >>= 5
    return "".join(reversed(chars))


def new_ulid() -> str:
    randomness = base64.b32encode(os.urandom(10)).translate(_TO_CROCKFORD).decode()
    return _time_part(int(time.time() * 1000)) + randomness


def new_tracking_id() -> str:
    return f"END-{new_ulid()}"


def new_tracking_ids(count: int) -> list[str]:
    """`count` tracking ids at once (one clock reading, one read of random bytes)."""
    prefix = "END-" + _time_part(int(time.time() * 1000))
    randomness = base64.b32encode(os.urandom(10 * count)).translate(_TO_CROCKFORD).decode()
    return [prefix + randomness[i : i + 16] for i in range(0, 16 * count, 16)]
