"""Errors that map to the command line's exit codes (docs/contracts.md: 2 bad input, 1 internal)."""


class LeukedgeError(Exception):
    """An internal failure: exit code 1."""

    exit_code = 1


class BadInput(LeukedgeError):
    """Bad input or usage the user can fix (a file, a field, a flag): exit code 2.

    The message is one line naming the file or field and what is wrong.
    """

    exit_code = 2


class BadFrame(BadInput):
    """A single frame or image that cannot be used; callers skip and count it."""


class BundleError(BadInput):
    """A bundle that must not be loaded: missing file, hash mismatch, label or shape disagreement."""
