"""One error type for everything a user can get wrong: it always names where and why."""

from __future__ import annotations

from pathlib import Path


class BuildError(Exception):
    """A problem with the user's input, reported as ``source: file: reason``.

    The CLI prints ``str(error)`` and exits non-zero; nothing already published is touched.
    ``redacted`` is set once input paths and identifiers in it were replaced by tokens
    (:func:`gmai_build.privacy.redact_error`).
    """

    redacted: bool = False

    def __init__(self, reason: str, *, source: str | None = None, file: str | Path | None = None):
        self.reason = reason
        self.source = source
        self.file = str(file) if file is not None else None
        parts = []
        if source:
            parts.append(f"source '{source}'")
        if self.file:
            parts.append(f"file {self.file}")
        super().__init__((": ".join(parts) + ": " if parts else "") + reason)

    def __reduce__(self):  # keep source, file and redaction across worker processes
        return (_rebuild, (type(self), self.reason, self.source, self.file, self.redacted))


def _rebuild(cls: type[BuildError], reason: str, source: str | None, file: str | None,
             redacted: bool) -> BuildError:
    err = BuildError.__new__(cls)
    BuildError.__init__(err, reason, source=source, file=file)
    err.redacted = redacted
    return err


class ConfigError(BuildError):
    """Invalid sources.yaml, label map or question pool (raised before any work starts)."""
