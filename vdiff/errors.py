"""Errors that are the user's to fix. `vdiff.main` prints them without a traceback."""


class ConfigError(ValueError):
    """A config value is missing, unknown or inconsistent; the message says what to change."""
