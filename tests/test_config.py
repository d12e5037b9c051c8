"""Every configuration field is checked when its value object is built."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from saga import (
    ChromaTimeouts,
    ConfigurationError,
    LeasePolicy,
    Limits,
    RetryPolicy,
    SagaError,
    SqliteOptions,
)

CONFIGS: list[type[Any]] = [LeasePolicy, RetryPolicy, ChromaTimeouts, SqliteOptions, Limits]

NOT_FINITE = [math.inf, -math.inf, math.nan, 10**400]
NOT_NUMBERS = [True, False, "1", None, [1.0]]

Fields = list[tuple[type[Any], str]]  # (value object class, field name)

POSITIVE_SECONDS: Fields = [
    (LeasePolicy, "ttl"),
    (RetryPolicy, "timeout"),
    (ChromaTimeouts, "connect"),
    (ChromaTimeouts, "read"),
    (ChromaTimeouts, "call"),
    (SqliteOptions, "busy_timeout"),
    (SqliteOptions, "settle_timeout"),
]
SECONDS_OR_ZERO: Fields = [(RetryPolicy, "wait_initial"), (RetryPolicy, "wait_max")]
COUNTS: Fields = [(RetryPolicy, "attempts")] + [(Limits, f.name) for f in attrs.fields(Limits)]


def cases(fields: Fields, values: list[Any]) -> list[tuple[type[Any], str, Any]]:
    return [(cls, name, value) for cls, name in fields for value in values]


def refused(cls: type[Any], field: str, value: Any) -> ConfigurationError:
    """Build ``cls`` with ``field=value``; the refusal, checked to name the field."""
    with pytest.raises(ConfigurationError) as caught:
        cls(**{field: value})
    assert caught.value.field == field
    assert isinstance(caught.value, SagaError)
    return caught.value


def refused_with(cls: type[Any], field: str, **kwargs: Any) -> ConfigurationError:
    """Like ``refused``, for a refusal that depends on more than one field."""
    with pytest.raises(ConfigurationError) as caught:
        cls(**kwargs)
    assert caught.value.field == field
    return caught.value


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_the_defaults_construct(cls: type[Any]) -> None:
    assert cls() == cls()


def test_the_documented_defaults() -> None:
    assert LeasePolicy().ttl == 30.0
    assert SqliteOptions().synchronous == "FULL"
    assert RetryPolicy().attempts == 3


def test_retries_can_still_be_disabled() -> None:
    policy = RetryPolicy.disabled()
    assert (policy.attempts, policy.wait_initial, policy.wait_max) == (1, 0.0, 0.0)


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    cases(POSITIVE_SECONDS, [0, 0.0, -1, -0.5, *NOT_FINITE, *NOT_NUMBERS]),
)
def test_a_timeout_must_be_a_finite_positive_number(cls: type[Any], field: str, value: Any) -> None:
    refused(cls, field, value)


@pytest.mark.parametrize(
    ("cls", "field", "value"), cases(SECONDS_OR_ZERO, [-1, -0.01, *NOT_FINITE, *NOT_NUMBERS])
)
def test_a_wait_must_be_a_finite_number_not_below_zero(
    cls: type[Any], field: str, value: Any
) -> None:
    refused(cls, field, value)


@pytest.mark.parametrize(
    ("cls", "field", "value"), cases(COUNTS, [0, -5, 1.0, 2.5, "3", None, True, False])
)
def test_a_count_must_be_an_int_of_at_least_one(cls: type[Any], field: str, value: Any) -> None:
    refused(cls, field, value)


@pytest.mark.parametrize(("cls", "field"), POSITIVE_SECONDS + SECONDS_OR_ZERO)
@pytest.mark.parametrize("value", [1, 2.5])
def test_seconds_accept_ints_and_floats(cls: type[Any], field: str, value: float) -> None:
    if field == "wait_initial":  # wait_max (1.0 by default) must not be below it
        built = RetryPolicy(wait_initial=value, wait_max=value)
    else:
        built = cls(**{field: value})
    assert getattr(built, field) == value


def test_zero_waits_are_allowed() -> None:
    assert RetryPolicy(wait_initial=0, wait_max=0).wait_max == 0


@pytest.mark.parametrize(("cls", "field"), COUNTS)
def test_a_count_of_one_is_allowed(cls: type[Any], field: str) -> None:
    assert getattr(cls(**{field: 1}), field) == 1


def test_wait_max_must_not_be_below_wait_initial() -> None:
    error = refused_with(RetryPolicy, "wait_max", wait_initial=0.5, wait_max=0.2)
    assert "wait_initial" in str(error)
    assert RetryPolicy(wait_initial=0.5, wait_max=0.5).wait_max == 0.5


def test_the_default_wait_max_bounds_a_larger_wait_initial() -> None:
    refused_with(RetryPolicy, "wait_max", wait_initial=2.0)


@pytest.mark.parametrize("mode", ["FULL", "NORMAL", "EXTRA"])
def test_synchronous_accepts_the_durable_modes(mode: str) -> None:
    assert SqliteOptions(synchronous=mode).synchronous == mode


@pytest.mark.parametrize("mode", ["OFF", "full", "", None, 2])
def test_synchronous_refuses_anything_else(mode: Any) -> None:
    refused(SqliteOptions, "synchronous", mode)


def test_the_refusal_names_the_class_and_the_value() -> None:
    error = refused(LeasePolicy, "ttl", -1)
    assert str(error) == "ttl: must be a finite number of seconds > 0, got -1 (LeasePolicy)"
    assert error.saga_id is None
