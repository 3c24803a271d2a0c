"""Random ids for requests, messages and tool calls.

They need to be unique, not secret: one generator per process, seeded from the
system's randomness (and seeded again in a forked child), costs a fraction of
what a system call per id, or a ``secrets.choice`` per character, does.
"""

import os
import random
import string

_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)

#: Byte value -> base62 character.  256 is not a multiple of 62, so the first 8 characters
#: come a little more often: about 5.95 bits per character still, 142 in 24.
_ALPHABET = (string.ascii_letters + string.digits).encode("ascii")
_TO_BASE62 = bytes(_ALPHABET[i % 62] for i in range(256))


def base62_id(length: int) -> str:
    """``length`` random letters and digits."""
    return _random.randbytes(length).translate(_TO_BASE62).decode("ascii")


def hex_id(size: int) -> str:
    """``size`` random bytes in hex."""
    return _random.randbytes(size).hex()
