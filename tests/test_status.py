"""Tests for eventlog.status: deriving and normalising workflow statuses."""

from __future__ import annotations

import pytest

from eventlog.status import STATUS_PATTERN, derive_status, normalise_status

FAILED_WORDS = ["failed", "failure", "error", "errored"]
CANCELLED_WORDS = ["cancelled", "canceled", "aborted"]
COMPLETED_WORDS = ["done", "exit", "completed", "complete", "finished", "succeeded"]

EVERY_RULE_WORD = (
    [(f"step.{w}", "FAILED") for w in FAILED_WORDS]
    + [(f"step.{w}", "CANCELLED") for w in CANCELLED_WORDS]
    + [(f"step.{w}", "COMPLETED") for w in COMPLETED_WORDS]
)

DERIVE_CASES = [
    *EVERY_RULE_WORD,
    # mixed case
    ("Step.FAILED", "FAILED"),
    ("JOB.Cancelled", "CANCELLED"),
    ("Task.DoNe", "COMPLETED"),
    ("STEP.ENTER", "RUNNING"),
    # each separator, and a word standing alone
    ("step.failed", "FAILED"),
    ("step_failed", "FAILED"),
    ("step-failed", "FAILED"),
    ("job_aborted", "CANCELLED"),
    ("job-finished", "COMPLETED"),
    ("done", "COMPLETED"),
    ("error", "FAILED"),
    ("a.b_c-succeeded", "COMPLETED"),
    # whole words, not substrings
    ("frame.abandoned", "RUNNING"),
    ("x.cancelled", "CANCELLED"),
    ("playbook.cancelled", "CANCELLED"),
    ("errorless", "RUNNING"),
    ("step.undone", "RUNNING"),
    ("exiting", "RUNNING"),
    ("stepfailed", "RUNNING"),
    # precedence: FAILED > CANCELLED > COMPLETED
    ("call.error.done", "FAILED"),
    ("cancelled.done", "CANCELLED"),
    ("aborted.failed", "FAILED"),
    ("done.cancelled.error", "FAILED"),
    # typical production event types
    ("step.enter", "RUNNING"),
    ("call.done", "COMPLETED"),
    ("command.completed", "COMPLETED"),
    ("step.exit", "COMPLETED"),
    ("command.failed", "FAILED"),
    ("playbook_completed", "COMPLETED"),
    ("execution.cancelled", "CANCELLED"),
    ("command.issued", "RUNNING"),
    # degenerate inputs
    ("", "RUNNING"),
    (".", "RUNNING"),
    ("..done..", "COMPLETED"),
]


@pytest.mark.parametrize(("event_type", "expected"), DERIVE_CASES)
def test_derive_status_maps_event_type_words_to_status(event_type: str, expected: str) -> None:
    """derive_status picks the first rule with a whole-word match, else RUNNING."""
    assert derive_status(event_type) == expected


def test_derive_status_only_returns_valid_statuses() -> None:
    """Every derived status matches STATUS_PATTERN."""
    for event_type, _ in DERIVE_CASES:
        assert STATUS_PATTERN.fullmatch(derive_status(event_type))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("completed", "COMPLETED"),
        ("COMPLETED", "COMPLETED"),
        ("Waiting_On_Input", "WAITING_ON_INPUT"),
        ("x", "X"),
        ("A" * 32, "A" * 32),
        ("A" * 33, None),
        ("a b", None),
        ("_X", None),
        ("1ABC", None),
        ("ABC1", None),
        ("", None),
        ("RUNNING\n", None),
        ("RUN-NING", None),
        ("\ufb01nished", None),  # "ﬁnished": upper() would turn the ligature into "FI"
    ],
)
def test_normalise_status_upper_cases_valid_values_and_rejects_others(
    value: str, expected: str | None
) -> None:
    """normalise_status returns the upper-cased value if it is a valid status, else None."""
    assert normalise_status(value) == expected
