"""Derive a workflow status from an event type, validate status strings, and say which event
types end an execution."""

from __future__ import annotations

import functools
import re

__all__ = ["STATUS_PATTERN", "TERMINAL_EVENTS", "derive_status", "normalise_status"]

STATUS_PATTERN = re.compile(r"^[A-Z][A-Z_]{0,31}$")

# Event types that end an execution, and the status each one sets.
TERMINAL_EVENTS = {
    "playbook.completed": "COMPLETED",
    "playbook.failed": "FAILED",
    "playbook.cancelled": "CANCELLED",
    "playbook_completed": "COMPLETED",
    "playbook_failed": "FAILED",
    "playbook_cancelled": "CANCELLED",
    "workflow.completed": "COMPLETED",
    "workflow.failed": "FAILED",
    "execution.cancelled": "CANCELLED",
}


_WORD_SEPARATORS = re.compile(r"[._-]")

# Checked in order: the first rule with a matching word wins, so an event that
# mentions both an error and completion (e.g. "call.error.done") is FAILED.
_RULES: tuple[tuple[str, frozenset[str]], ...] = (
    ("FAILED", frozenset({"failed", "failure", "error", "errored"})),
    ("CANCELLED", frozenset({"cancelled", "canceled", "aborted"})),
    ("COMPLETED", frozenset({"done", "exit", "completed", "complete", "finished", "succeeded"})),
)


# Producers use a few dozen event types; a batch repeats them thousands of times.
@functools.lru_cache(maxsize=4096)
def derive_status(event_type: str) -> str:
    """Map an event type to FAILED, CANCELLED, COMPLETED or RUNNING by its whole words."""
    # Whole words, not substrings: "frame.abandoned" contains "done" but is not done.
    words = {word.casefold() for word in _WORD_SEPARATORS.split(event_type)}
    for status, vocabulary in _RULES:
        if not words.isdisjoint(vocabulary):
            return status
    return "RUNNING"


def normalise_status(value: str) -> str | None:
    """Upper-case `value` and return it if it is a valid status, else None."""
    # Non-ASCII is rejected before upper-casing because str.upper() can turn it
    # into ASCII ("ﬁ" -> "FI", "ı" -> "I"), which would smuggle it past the pattern.
    if not value.isascii():
        return None
    upper = value.upper()
    # fullmatch, because "$" alone would also accept a trailing newline.
    return upper if STATUS_PATTERN.fullmatch(upper) else None
