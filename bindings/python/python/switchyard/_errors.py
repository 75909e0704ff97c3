"""The exception hierarchy of switchyard: one class per error kind of the Rust SDK."""

from __future__ import annotations

import builtins
from typing import Any, Optional


class SwitchyardError(Exception):
    """Base class of every error the Switchyard SDK reports.

    Attributes:
        kind: the SDK error kind, e.g. ``"unknown_topic"`` (stable, for matching).
        retriable: True when the same operation may succeed if tried again later.
        record: for a failed send, the record given back unchanged (a ``switchyard.Record``);
            the SDK did not, and will not, send it anywhere else. ``None`` otherwise.
    """

    kind: str = "internal"

    def __init__(self, message: str, *, retriable: bool = False, record: Optional[Any] = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.record = record


class InvalidArgumentError(SwitchyardError, ValueError):
    """An argument the SDK refused (bad app name, group id, property...)."""

    kind = "invalid_argument"


class UnknownTopicError(SwitchyardError):
    """The logical topic is not in the configuration (or not allowed for this app)."""

    kind = "unknown_topic"


class NoConfigError(SwitchyardError):
    """No configuration: the config service did not answer and there is no usable cache."""

    kind = "no_config"


class ConfigServiceError(SwitchyardError):
    """The config service could not be reached or answered with an error."""

    kind = "config_service"


class CacheError(SwitchyardError):
    """The configuration file or last-known-good cache is unreadable or invalid."""

    kind = "cache"


class KafkaError(SwitchyardError):
    """Kafka returned an error."""

    kind = "kafka"


class TimeoutError(SwitchyardError, builtins.TimeoutError):
    """An operation did not complete in time."""

    kind = "timeout"


class ClosedError(SwitchyardError):
    """The client, producer or consumer is closed (or closing)."""

    kind = "closed"


class QuotaExceededError(SwitchyardError):
    """A quota with policy REJECT refused the send; capacity comes back later (retriable)."""

    kind = "quota_exceeded"


class InternalError(SwitchyardError):
    """A bug in the binding or the SDK (a Rust panic, or an error kind this version does not
    know). The message says where."""

    kind = "internal"


__all__ = [
    "SwitchyardError",
    "InvalidArgumentError",
    "UnknownTopicError",
    "NoConfigError",
    "ConfigServiceError",
    "CacheError",
    "KafkaError",
    "TimeoutError",
    "ClosedError",
    "QuotaExceededError",
    "InternalError",
]
