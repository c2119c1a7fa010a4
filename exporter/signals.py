"""SIGTERM and SIGINT turned into a stop event by a thread, never by the signal handler.

Python runs a signal handler in the main thread between two bytecodes, so it may run while
that thread holds the stop event's own lock (inside `stop.wait(0)`, say). A handler that
called `stop.set()` would then wait on a lock held by the very frame it interrupted, for
ever: the process ignored every later signal and only SIGKILL ended it. Here the
interpreter's C-level handler writes the signal's number to a pipe
(`signal.set_wakeup_fd`), the Python-level handler does nothing, and a daemon thread reads
the pipe, logs the signal and sets the event, holding no lock the main thread holds.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("exporter")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _nothing(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the wakeup pipe already carries the signal to the relay."""


def _relay(read_fd: int, stop: threading.Event, wanted: frozenset[int]) -> None:
    try:
        while chunk := os.read(read_fd, 64):  # b"" once the write end is closed
            for signum in chunk:
                if signum in wanted:
                    log.info("received %s", signal.Signals(signum).name)
                    stop.set()
    finally:
        os.close(read_fd)


@contextmanager
def stop_on_signals(
    stop: threading.Event, signals: Iterable[signal.Signals] = STOP_SIGNALS
) -> Iterator[None]:
    """Within the block, each of `signals` sets `stop` (from a thread of its own).

    Must be entered from the main thread (Python delivers signals only there). On leaving,
    the previous handlers and wakeup fd come back and the relay thread ends.
    """
    wanted = tuple(signals)
    read_fd, write_fd = os.pipe()
    # The C handler must never block; a full pipe only drops repeats of a signal.
    os.set_blocking(write_fd, False)
    relay = threading.Thread(
        target=_relay,
        args=(read_fd, stop, frozenset(int(s) for s in wanted)),
        name="signal-relay",
        daemon=True,
    )
    relay.start()
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, _nothing) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)
        relay.join(timeout=1.0)
