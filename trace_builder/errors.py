"""User-facing errors: one line naming the problem and the fix, never a traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, unreachable server, ...).

    The CLI prints `error: <message>` and exits with status 2; the message must say
    what is wrong and how to fix it, in one line.
    """


class LLMError(Exception):
    """An LLM request that failed for good (after retries); `reason` is short and stable."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
