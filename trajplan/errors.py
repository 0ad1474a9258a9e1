"""The one exception type users see: a clear, one-line message (the CLI exits 2 on it)."""


class TrajplanError(Exception):
    """Bad input or an unusable file: the message says what is wrong and what to do."""
