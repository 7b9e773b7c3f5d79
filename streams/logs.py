"""Structured logging: structlog key/value events, JSON in production.

:func:`configure` is called once by the CLI.  Standard-library loggers (Faust,
aiokafka, mode) are routed through the same processors so every line has the
same shape.  Customer ids are never logged raw: bind :func:`customer_ref`.

>>> customer_ref("c-42", key=b"k") == customer_ref("c-42", key=b"k")
True
>>> customer_ref("c-42", key=b"k") != "c-42"
True
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "json") -> None:
    """Set up structlog and the standard library for this process."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # The framework is chatty at info about every rebalance step; its warnings matter.
    for noisy in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(_LEVELS[level], logging.WARNING))


#: The deployment's pseudonym key, set by the worker once its store is open.
_pseudonym_key: list[bytes] = [b""]


def use_pseudonym_key(key: bytes) -> None:
    """Hash customer ids in logs with the deployment's secret from now on."""
    _pseudonym_key[0] = key


def customer_ref(customer_id: str, key: bytes | None = None) -> str:
    """A keyed hash of a customer id, safe to log and stable within a deployment.

    The same pseudonym as the forget-list's (:class:`streams.privacy.Pseudonyms`).
    """
    secret = _pseudonym_key[0] if key is None else key
    return hmac.new(secret, customer_id.encode(), hashlib.sha256).hexdigest()[:32]
