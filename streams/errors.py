"""Every error Relevanz raises on purpose, in one tree; the CLI turns each into one line.

::

    RelevanzError                 relevanz: error: <message>, exit code 1 unless noted
    ├── ConfigError               a setting or CLI value is not usable (exit code 2)
    │   └── InvalidTransactions   the transaction log of ``relevanz evaluate`` (file, line)
    ├── BrokerUnavailable         the Kafka-protocol broker cannot be started or reached
    ├── ServerUnavailable         a real Kafka or Cassandra cannot be resolved, started
    │                             or reached (names the server; the tail of its log)
    ├── StoreUnavailable          the store cannot be opened, read or written
    ├── OperatorApiError          the operator API cannot be reached or refused a request
    └── Stalled                   a run stopped making progress before its end
        ├── ReplayStalled         ``relevanz replay`` before the end of the topics
        ├── DemoStalled           ``relevanz demo`` before every event was accounted for
        └── BenchStalled          a ``relevanz bench`` stage before reading every event

Raised below the platform, where this module cannot be imported (the core and
the contracts are pure), and translated at the edge with ``raise ... from``:

- :class:`schemas.errors.InvalidEvent` (a malformed event): the ingest agent
  turns it into a dead letter with an actionable reason; the worker keeps running.
- :class:`agents.core.config_file.ConfigFileError` (a TOML configuration file;
  ``CampaignFileError`` for the campaign book): a :class:`ConfigError` naming
  ``RELEVANZ_CAMPAIGNS`` (:func:`streams.app.campaign_book`) or the tag rules'
  file (:func:`streams.tag_rules.parse_rules`).
- :class:`agents.core.snapshots.SnapshotInvalid` (a stored model snapshot this
  release cannot read): the learner and the forecasts log
  ``model_snapshot_unreadable``, keep the snapshot and go on without it.

The request errors of the operator API (``BadInput`` in :mod:`streams.api.web`)
are answered with HTTP 400 and never leave the API.
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


class InvalidTransactions(ConfigError):
    """The transaction log given to ``relevanz evaluate`` cannot be read.

    The message names the file, the line and what is wrong with it.
    """


class BrokerUnavailable(RelevanzError):
    """The Kafka-protocol broker could not be started or reached."""


class ServerUnavailable(RelevanzError):
    """A real server (Kafka, Cassandra) could not be resolved, started or reached.

    The message names the server, what failed and, when it started, the tail
    of its log.
    """


class StoreUnavailable(RelevanzError):
    """The store could not be opened, read or written."""


class OperatorApiError(RelevanzError):
    """The operator API could not be reached or refused the request."""


class Stalled(RelevanzError):
    """A run stopped making progress before it reached its end."""


class ReplayStalled(Stalled):
    """Replay stopped making progress before it reached the end of the topics."""


class DemoStalled(Stalled):
    """The worker stopped making progress before every event was accounted for."""


class BenchStalled(Stalled):
    """A stage stopped consuming before it had read every published event."""
