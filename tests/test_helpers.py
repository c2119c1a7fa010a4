"""The exposition helpers every test reads metrics through: a missing series is never a 0."""

from __future__ import annotations

import pytest

from tests.conftest import MissingSeries, assert_absent, assert_never_down, parse_exposition, sample

TEXT = """\
# TYPE neo_up gauge
neo_up{account="acme",endpoint="streams"} 1.0
neo_up{account="acme",endpoint="tasks"} 0.0
# TYPE neo_streams_total counter
neo_streams_total{account="acme",model="gpt-5"} 3.0
"""


def test_a_series_exported_as_zero_reads_zero() -> None:
    assert sample(parse_exposition(TEXT), "neo_up", account="acme", endpoint="tasks") == 0


def test_a_missing_series_fails_naming_it_and_the_series_that_are_there() -> None:
    samples = parse_exposition(TEXT)
    with pytest.raises(MissingSeries) as missing:
        sample(samples, "neo_up", account="acme", endpoint="user")
    message = str(missing.value)
    assert 'no series neo_up{account="acme",endpoint="user"}' in message
    assert 'neo_up{account="acme",endpoint="streams"}' in message
    assert 'neo_up{account="acme",endpoint="tasks"}' in message
    with pytest.raises(MissingSeries, match="no neo_billing_used_credits series at all"):
        sample(samples, "neo_billing_used_credits", account="acme")
    # A subset of the labels is not the series either.
    with pytest.raises(MissingSeries):
        sample(samples, "neo_up", account="acme")


def test_absent_fails_when_any_series_carries_the_labels() -> None:
    samples = parse_exposition(TEXT)
    assert_absent(samples, "neo_up", account="other")
    assert_absent(samples, "neo_billing_used_credits")
    with pytest.raises(AssertionError, match="should be absent"):
        assert_absent(samples, "neo_up", endpoint="tasks")


def test_a_counter_that_disappears_is_not_read_as_zero() -> None:
    before = parse_exposition(TEXT)
    assert_never_down(before, before)
    key = next(k for k in before if k[0] == "neo_streams_total")
    with pytest.raises(AssertionError, match="now missing"):
        assert_never_down(before, {k: v for k, v in before.items() if k != key})
    with pytest.raises(AssertionError, match="went down"):
        assert_never_down(before, {**before, key: 2.0})
