"""Run a command as the child of a subreaper that reaps every orphan until it is terminated.

Used by the host tests to run pazuzud: when a test kills pazuzud, its workers are re-parented
here (not to the host's PID 1, which does not reap on these machines), so a dead worker is
really gone from /proc instead of lingering as a zombie.

Usage: python -m tests.reaper STATUS_FILE CMD...; the command's exit code is written there.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    status_file, argv = argv[0], argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"reaper: prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    # Blocked, a SIGCHLD or SIGTERM stays pending until sigwait takes it: none is missed.
    watched = {signal.SIGCHLD, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        os.execvp(argv[0], argv)
    while True:
        _reap_all(child, status_file)
        if signal.sigwait(watched) == signal.SIGTERM:
            return 0


def _reap_all(command: int, status_file: str) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == command:
            with open(status_file, "w") as out:
                out.write(str(os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
