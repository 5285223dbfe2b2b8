"""Stopping on SIGINT, SIGTERM and SIGHUP without a traceback, whenever the signal comes.

A person presses Ctrl-C, or closes the terminal, when they like: often while Python is still importing
(a second or more here), long before any command has set up handlers of its own. Python's defaults
would answer SIGINT with a `KeyboardInterrupt` traceback from deep inside an import.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_quietly_on_stop_signals() -> None:
    """Until a command installs handlers of its own, a stop signal ends the process at once and silently.

    Only for the time before anything was started: there is nothing yet that would need stopping.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_quietly)


def _exit_quietly(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds without a traceback; 128 + N is how a shell reports death by signal N.
    raise SystemExit(128 + signum)


def restore_default_stop_signals() -> None:
    """Python's own handlers again, once the imports are done: a server's framework (uvicorn, arq) puts
    its handlers in place and, stopping, hands a signal it caught back to these, so the process ends
    as signalled (uvicorn re-raises the signal it caught after restoring the handlers it found)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
