"""The `pazuzud` command's entry point: the daemon, without OpenSSL.

pazuzud speaks no TLS and hashes nothing but its instances' fingerprints, yet asyncio imports
`ssl` and hashlib prefers OpenSSL's `_hashlib`: together they map libssl and libcrypto, about
4.5 MiB of the daemon's resident memory. Both imports are refused before anything runs, which
asyncio and hashlib expect of a Python built without OpenSSL: asyncio goes without TLS, and
hashlib uses its own SHA-256, which gives the same fingerprints.
"""

from __future__ import annotations

import sys

WITHOUT = ("ssl", "_ssl", "_hashlib")


def main() -> None:
    for name in WITHOUT:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    from pazuzu.daemon import main as daemon

    daemon()
