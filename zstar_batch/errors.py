"""The runner's exceptions: which failures the user can fix, and which ones retry a job elsewhere."""
from __future__ import annotations


class ZStarBatchError(Exception):
    """A problem the user can fix (printed without a traceback)."""


class ServerDown(ZStarBatchError):
    """The server did not answer (refused, timed out, connection dropped) or answered 5xx."""


class JobFailed(ZStarBatchError):
    """The server answered but the job failed (rejected prompt, execution error)."""


class HTTPFailure(ZStarBatchError):
    """A 4xx answer; `body` keeps the server's text so callers can explain it."""

    def __init__(self, code: int, body: str, message: str):
        super().__init__(message)
        self.code, self.body = code, body
