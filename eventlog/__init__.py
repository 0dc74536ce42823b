"""eventlog: a small, fast, durable event log for workflow events."""

__version__ = "0.1.0"
