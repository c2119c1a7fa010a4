"""A child process for test_signals (run as `python -m tests.signal_child TRIES`): it stops
TRIES times on a signal that a thread sends at a random moment while the main thread spins
on `stop.wait(0)`, the call a read makes between two pages.

A signal handler that set the event itself would, sooner or later, run while the main thread
held the event's lock, and this process would hang; the parent's timeout then fails the test.
It prints one line, `stopped N times`, when every try has stopped.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time

from exporter.signals import stop_on_signals


def _send_later(signum: signal.Signals, delay: float) -> None:
    time.sleep(delay)
    os.kill(os.getpid(), signum)


def main(tries: int) -> None:
    rng = random.Random(tries)
    stopped = 0
    for n in range(tries):
        stop = threading.Event()
        signum = signal.SIGTERM if n % 2 else signal.SIGINT
        with stop_on_signals(stop):
            sender = threading.Thread(target=_send_later, args=(signum, rng.uniform(0, 0.003)))
            sender.start()
            deadline = time.monotonic() + 5
            while not stop.wait(0):  # holds and releases the event's lock, over and over
                if time.monotonic() > deadline:
                    sys.exit(f"try {n}: {signum.name} did not set the stop event within 5 s")
            sender.join()
        stopped += 1
    print(f"stopped {stopped} times", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
