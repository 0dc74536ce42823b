"""eventlog: a small, fast, durable event log for workflow events."""

from .envelope import Envelope, Event
from .log import EventLog
from .problems import (
    DatabaseUnavailable,
    EventConflict,
    IdempotencyConflict,
    InvalidEnvelope,
    NotFound,
    Overloaded,
    Problem,
    ResumeExpired,
)

__version__ = "0.1.0"
__all__ = [
    "DatabaseUnavailable",
    "Envelope",
    "Event",
    "EventConflict",
    "EventLog",
    "IdempotencyConflict",
    "InvalidEnvelope",
    "NotFound",
    "Overloaded",
    "Problem",
    "ResumeExpired",
]
