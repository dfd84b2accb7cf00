"""A worker with a slow start-up that reports readiness to pazuzu with sd_notify's READY=1.

Only the standard library: the sd_notify protocol is one datagram to the unix socket named by
$NOTIFY_SOCKET. Send it from the main process, which stays alive (systemd ignores a notification
whose sender has already exited).
"""

import os
import signal
import socket
import threading

stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())


def notify(message: str) -> None:
    """Send one sd_notify message, if pazuzu asked for them (`notify: true`)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


name = os.environ.get("DYNO", "cache")
print(f"{name}: warming up", flush=True)
stopping.wait(3)  # stands for loading data, opening connections, ...
notify("READY=1\nSTATUS=serving")
print(f"{name}: ready", flush=True)

served = 0
while not stopping.wait(5):
    served += 1
    notify(f"STATUS=served {served} batches")
    print(f"{name}: served batch {served}", flush=True)
notify("STOPPING=1")
print(f"{name}: stopping after {served} batches", flush=True)
