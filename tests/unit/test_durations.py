"""Go ``time.ParseDuration`` semantics of worker.durations.parse_go_duration."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.durations import go_duration, parse_go_duration
from worker.errors import ConfigError
from worker.settings import parse_features


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m", timedelta(minutes=1)),
        ("1m0s", timedelta(minutes=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h0m0s", timedelta(hours=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("-0", timedelta(0)),
        ("+0", timedelta(0)),
        ("-1s", timedelta(seconds=-1)),
        ("+5s", timedelta(seconds=5)),
        ("-1m30s", -timedelta(minutes=1, seconds=30)),
        ("1\u00b5s", timedelta(microseconds=1)),  # micro sign
        ("1\u03bcs", timedelta(microseconds=1)),  # greek mu
        ("3us", timedelta(microseconds=3)),
        ("1500ns", timedelta(microseconds=2)),  # rounded up to whole microseconds
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30, milliseconds=500)),
        ("720h0m0s", timedelta(days=30)),
        ("1m1m", timedelta(minutes=2)),  # Go adds repeated units
        ("2562047h", timedelta(hours=2562047)),  # just inside Go's int64 nanoseconds
    ],
)
def test_valid_go_durations(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize("text", ["1ns", "999ns", "0.0000001s"])
def test_positive_sub_microsecond_duration_stays_positive(text: str) -> None:
    # A period of 0 means "never sync": a tiny positive period must not collapse into it.
    assert parse_go_duration(text) == timedelta(microseconds=1)


def test_negative_nanoseconds_stay_negative() -> None:
    assert parse_go_duration("-1ns") < timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "1",  # no unit
        "m",  # no number
        "1x",  # unknown unit
        "",
        "1m-1s",  # a sign only at the start
        "-",
        "+",
        ".",
        ".s",
        "1 m",
        " 1m",
        "1m ",
        "1M",  # units are case-sensitive
        "1d",  # Go has no days
        "1h1",  # trailing number without unit
        "--1s",
        "1e3s",
        "2562048h",  # beyond Go's int64 nanoseconds
        "9223372036854775808ns",
        "100000000000h",
        "1" * 5000 + "s",
    ],
)
def test_invalid_go_durations_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_go_duration(text)


def test_most_negative_go_duration_is_accepted() -> None:
    assert parse_go_duration("-9223372036854775808ns") < timedelta(days=-106751)


def test_features_parse_known_names() -> None:
    assert parse_features("EnableCSI") == frozenset({"EnableCSI"})
    assert parse_features(" EnableCSI , ") == frozenset({"EnableCSI"})
    assert parse_features("") == frozenset()
    assert parse_features(None) == frozenset()


def test_unknown_feature_is_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="EnableFoo"):
        parse_features("EnableCSI,EnableFoo")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(minutes=1), "1m0s"),
        (timedelta(hours=1, minutes=30), "1h30m0s"),
        (timedelta(hours=720), "720h0m0s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(minutes=2, milliseconds=5), "2m0.005s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=7), "7µs"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_formatted_as_go_formats_durations(value: timedelta, text: str) -> None:
    # The strings Go's time.Duration.String() gives for the same values.
    assert go_duration(value) == text
    assert parse_go_duration(text) == value
