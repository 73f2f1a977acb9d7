"""One-line error reporting shared by the CLI, the study scripts and the RLVR batch worker (a low module, so
that none of them imports another's entry point)."""

from __future__ import annotations

import sys
from collections.abc import Callable

# what a command reports as one line naming the problem (bad input, missing file, failed run), exit status 1
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, IndexError, RuntimeError)


def one_line_errors(body: Callable[[], int], interrupted: str = "interrupted; no partial output was kept") -> int:
    """Run a command's `body`: Ctrl-C prints `interrupted` and returns 130; a `USER_ERRORS` exception prints the
    first line of its message as `error: ...` and returns 1; anything else (a bug) keeps its traceback."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1


__all__ = ["USER_ERRORS", "one_line_errors"]
