"""The processes `switchboard dev` starts, and stopping all of them whenever a stop signal comes.

Each child runs in a session of its own, so a Ctrl-C in the terminal reaches only `switchboard dev`,
which then stops them in order (the API first, so no new work arrives; the worker, which finishes
its runs; Redis last). The signal handlers only take note: a handler that raised could do so between
starting a child and remembering it, and that child would be left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from switchboard.signals import STOP_SIGNALS

POLL_S = 0.1


class StopSignals:
    """Counts SIGINT, SIGTERM and SIGHUP (closing the terminal) from the moment it is installed."""

    def __init__(self) -> None:
        self.count = 0
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._note)

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def insisted(self) -> bool:
        """A second signal: stop waiting for children to finish, kill them."""
        return self.count > 1

    def _note(self, _signum: int, _frame: FrameType | None) -> None:
        self.count += 1

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        deadline = time.monotonic() + seconds
        count = self.count
        while self.count == count and time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    # How long it may take to stop after SIGTERM before it is killed.
    grace_s: float


@dataclass
class Children:
    stop_signals: StopSignals
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str], grace_s: float) -> Child:
        process = subprocess.Popen(list(argv), env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        child = Child(name, process, grace_s)
        self.started.append(child)
        return child

    def first_exited(self) -> Child | None:
        return next((child for child in self.started if child.process.poll() is not None), None)

    def stop_all(self) -> None:
        """Newest first: SIGTERM, then wait its grace (or less, after a second stop signal), then SIGKILL.

        Whatever a child left in its process group (an MCP server the worker started) goes with it.
        """
        for child in reversed(self.started):
            process = child.process
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + child.grace_s
                while process.poll() is None and time.monotonic() < deadline and not self.stop_signals.insisted:
                    time.sleep(POLL_S)
                if process.poll() is None:
                    process.kill()
                    process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
