"""One-line error reporting shared by the CLI, the study scripts and the RLVR batch worker (a low module, so
that none of them imports another's entry point)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

# what a command reports as one line naming the problem (bad input, missing file, failed run), exit status 1
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, IndexError, RuntimeError)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler's time limit) raised where the program is, so that it unwinds like Ctrl-C:
    atomic writes delete their temporary folders and RLVR pools stop their workers and drop unfinished runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def one_line_errors(body: Callable[[], int], interrupted: str = "interrupted; no partial output was kept") -> int:
    """Run a command's `body`: Ctrl-C prints `interrupted` and returns 130 (SIGTERM: 143, after the same unwinding);
    a `USER_ERRORS` exception prints the first line of its message as `error: ...` and returns 1; anything else
    (a bug) keeps its traceback."""
    previous = (
        signal.signal(signal.SIGTERM, _raise_terminated)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        return int(body() or 0)
    except KeyboardInterrupt as e:
        print(interrupted, file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except USER_ERRORS as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["USER_ERRORS", "Terminated", "one_line_errors"]
