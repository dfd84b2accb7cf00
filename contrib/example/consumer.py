"""A stand-in queue consumer: prints one line per 'job' and stops cleanly on SIGTERM."""

import os
import signal
import threading

stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())

name = os.environ.get("DYNO", "queue")
job = 0
while not stopping.is_set():
    job += 1
    print(f"{name}: processed job {job}", flush=True)
    stopping.wait(2)
print(f"{name}: stopping after {job} jobs", flush=True)
