"""Tracking ids: unique, time-sortable, not sequential integers.

`END-` + a 26-character Crockford base32 ULID: 48 bits of milliseconds since the epoch
then 80 random bits. Ids sort by creation time (to the millisecond) and cannot be
guessed from a neighbour. Within one millisecond, order is random.
"""

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_tracking_id() -> str:
    return f"END-{new_ulid()}"
