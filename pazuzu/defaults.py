"""Default paths, in a module of their own so that the CLI can import them cheaply."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG_PATH = Path("/etc/pazuzu/pazuzu.conf")
DEFAULT_SOCKET_PATH = Path("/var/run/pazuzud.socket")
