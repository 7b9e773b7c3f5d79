"""Errors raised by the platform, each turned into one readable line by the CLI.

::

    RelevanzError
    ├── ConfigError        a setting or CLI value is not usable
    ├── BrokerUnavailable  the Kafka-protocol broker cannot be started or reached
    └── StoreUnavailable   the store cannot be opened, read or written
"""

from __future__ import annotations


class RelevanzError(Exception):
    """Base of every error the CLI reports as one line with an exit code."""

    exit_code = 1


class ConfigError(RelevanzError):
    """A setting (``RELEVANZ_*`` variable) or CLI value is not usable.

    The message names the setting, what it got and what it accepts.
    """

    exit_code = 2


class BrokerUnavailable(RelevanzError):
    """The Kafka-protocol broker could not be started or reached."""


class StoreUnavailable(RelevanzError):
    """The store could not be opened, read or written."""
