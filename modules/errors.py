"""The one exception type gapbridge raises for problems a user can fix.

``cli.py`` prints the message of a :class:`GapbridgeError` on one line and exits non-zero instead of
showing a traceback, so each message must name the option or file at fault and say what to do next.
"""


class GapbridgeError(Exception):
    """A problem with the user's configuration, data or run that the message explains."""


class ConfigError(GapbridgeError):
    """A configuration value is invalid, or two components disagree (model vs datamodule)."""


class DataNotFoundError(GapbridgeError, FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says how to get it."""


class NonFiniteLossError(GapbridgeError, FloatingPointError):
    """Training produced a NaN or infinite loss; checkpoints already written are left intact."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
