"""Rule filters and actions of the emulator: SQL, correlation, true/false, SQL actions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servicebus_emulator.filters import (
    CorrelationFilter,
    Filter,
    FilterError,
    SqlRuleAction,
    correlation_filter,
    false_filter,
    sql_action,
    sql_filter,
    true_filter,
)


def match(expression: str, user: dict[str, Any] | None = None, system: dict[str, Any] | None = None) -> bool:
    return sql_filter(expression).matches(system or {}, user or {})


# --------------------------------------------------------------- the project's rules


def test_route_done_and_target_null() -> None:
    f = sql_filter("sio_route_done IS NULL AND sio_target_node IS NULL")
    assert f.matches({}, {"sio_kind": "emit"})
    assert f.matches({}, {"sio_route_done": None})
    assert not f.matches({}, {"sio_route_done": True})
    assert not f.matches({}, {"sio_target_node": "node-a"})


def test_persist_and_hops() -> None:
    f = sql_filter("sio_persist = TRUE AND sio_hops = 0")
    assert f.matches({}, {"sio_persist": True, "sio_hops": 0})
    assert not f.matches({}, {"sio_persist": False, "sio_hops": 0})
    assert not f.matches({}, {"sio_persist": True, "sio_hops": 1})
    assert not f.matches({}, {"sio_hops": 0})
    assert not f.matches({}, {"sio_persist": 1, "sio_hops": 0})  # 1 is not TRUE
    assert not f.matches({}, {"sio_persist": "true", "sio_hops": 0})


def test_kind_emit_and_hops() -> None:
    f = sql_filter("sio_kind = 'emit' AND sio_hops = 0")
    assert f.matches({}, {"sio_kind": "emit", "sio_hops": 0})
    assert f.matches({}, {"sio_kind": "emit", "sio_hops": 0.0})
    assert not f.matches({}, {"sio_kind": "Emit", "sio_hops": 0})
    assert not f.matches({}, {"sio_kind": "emit", "sio_hops": "0"})
    assert not f.matches({}, {"sio_kind": "emit"})


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"sio_origin_node": "node-b"}, True),
        ({"sio_origin_node": "node-b", "sio_target_node": "node-a"}, True),
        ({"sio_origin_node": "node-b", "sio_target_node": "node-c"}, False),
        ({"sio_origin_node": "node-a"}, False),
        ({"sio_origin_node": "node-a", "sio_target_node": "node-a"}, False),
        ({}, False),  # unknown origin: the whole AND is never TRUE
        ({"sio_origin_node": None}, False),
    ],
)
def test_origin_and_target(user: dict[str, Any], expected: bool) -> None:
    f = sql_filter("sio_origin_node <> 'node-a' AND (sio_target_node IS NULL OR sio_target_node = 'node-a')")
    assert f.matches({}, user) is expected


# ------------------------------------------------------------------- literals / types


@pytest.mark.parametrize(
    ("expression", "user"),
    [
        ("a = 42", {"a": 42}),
        ("a = 42", {"a": 42.0}),
        ("a = 4.5", {"a": 4.5}),
        ("a = .5", {"a": 0.5}),
        ("a = 101.5E5", {"a": 10150000}),
        ("a = 0.5e-2", {"a": 0.005}),
        ("a = 'it''s'", {"a": "it's"}),
        ("a = ''", {"a": ""}),
        ("a = 'ünï ✓'", {"a": "ünï ✓"}),
        ("a = TRUE", {"a": True}),
        ("a = false", {"a": False}),
        ("a = -3", {"a": -3}),
        ("a = - -3", {"a": 3}),
        ("a = +3", {"a": 3}),
        ("a = 9223372036854775807", {"a": 2**63 - 1}),
    ],
)
def test_literals(expression: str, user: dict[str, Any]) -> None:
    assert match(expression, user)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("a = 5", True),
        ("a <> 5", False),
        ("a != 5", False),
        ("a > 4", True),
        ("a >= 5", True),
        ("a < 5", False),
        ("a <= 5", True),
        ("a > 4.9", True),
        ("5 = a", True),
        ("6 > a", True),
        ("4 > a", False),
        ("a < 5.5", True),
    ],
)
def test_numeric_comparisons(expression: str, expected: bool) -> None:
    assert match(expression, {"a": 5}) is expected


def test_string_comparison_is_ordinal_and_case_sensitive() -> None:
    assert match("s = 'abc'", {"s": "abc"})
    assert not match("s = 'ABC'", {"s": "abc"})
    assert match("s <> 'ABC'", {"s": "abc"})
    assert match("s < 'abd'", {"s": "abc"})
    assert match("s > 'ABC'", {"s": "abc"})  # ordinal: lower case sorts after upper


@pytest.mark.parametrize(
    "expression",
    [
        "a = 5",
        "a <> 5",
        "a > 5",
        "a < 5",
        "NOT (a = 5)",
        "a = TRUE",
        "a <> TRUE",
        "b = 1",
        "b <> 1",
        "NOT (b = 1)",
        "b > 0",
        "a + 1 = 6",
    ],
)
def test_mixed_kinds_are_unknown_never_raise(expression: str) -> None:
    assert not match(expression, {"a": "5", "b": True})


def test_booleans_only_support_equality() -> None:
    assert match("a = TRUE", {"a": True})
    assert match("a <> FALSE", {"a": True})
    assert not match("a > FALSE", {"a": True})
    assert not match("NOT (a > FALSE)", {"a": True})


def test_other_value_types_compare_within_their_kind() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    later = now + timedelta(seconds=1)
    system = {"enqueuedtimeutc": later, "scheduledenqueuetimeutc": now}
    assert match("sys.EnqueuedTimeUtc > sys.ScheduledEnqueueTimeUtc", system=system)
    assert match("d < e", {"d": now, "e": later})
    assert not match("d < e", {"d": now, "e": "2025"})
    assert not match("d < e", {"d": now, "e": datetime(2025, 1, 1)})  # naive vs aware
    guid = uuid.uuid4()
    assert match("g = h", {"g": guid, "h": uuid.UUID(str(guid))})
    assert match("x = y", {"x": b"\x00", "y": b"\x00"})


# --------------------------------------------------------------- three-valued logic

T, F, U = True, False, None


def tri(value: bool | None) -> dict[str, Any]:
    return {} if value is None else {"v": value}


AND_TABLE = [
    (T, T, T),
    (T, F, F),
    (T, U, U),
    (F, T, F),
    (F, F, F),
    (F, U, F),
    (U, T, U),
    (U, F, F),
    (U, U, U),
]
OR_TABLE = [(T, T, T), (T, F, T), (T, U, T), (F, T, T), (F, F, F), (F, U, U), (U, T, T), (U, F, U), (U, U, U)]


def truth_of(expression: str, a: bool | None, b: bool | None) -> bool | None:
    """TRUE/FALSE/UNKNOWN of ``expression`` via matches() of it and of its negation."""
    user = {**({} if a is None else {"a": a}), **({} if b is None else {"b": b})}
    if match(expression, user):
        return True
    return False if match(f"NOT ({expression})", user) else None


@pytest.mark.parametrize(("a", "b", "expected"), AND_TABLE)
def test_and_truth_table(a: bool | None, b: bool | None, expected: bool | None) -> None:
    assert truth_of("a = TRUE AND b = TRUE", a, b) is expected


@pytest.mark.parametrize(("a", "b", "expected"), OR_TABLE)
def test_or_truth_table(a: bool | None, b: bool | None, expected: bool | None) -> None:
    assert truth_of("a = TRUE OR b = TRUE", a, b) is expected


@pytest.mark.parametrize(("a", "expected"), [(T, F), (F, T), (U, U)])
def test_not_truth_table(a: bool | None, expected: bool | None) -> None:
    assert truth_of("NOT a = TRUE", a, None) is expected


def test_missing_property_makes_comparisons_unknown() -> None:
    for expression in (
        "x = 1",
        "x <> 1",
        "NOT x = 1",
        "NOT (x <> 1)",
        "x = NULL",
        "x <> NULL",
        "1 = NULL",
        "NULL = NULL",
        "x + 1 > 0",
        "-x < 0",
    ):
        assert not match(expression, {"y": 1}), expression


def test_is_null_and_is_not_null() -> None:
    assert match("x IS NULL")
    assert match("x IS NULL", {"x": None})
    assert not match("x IS NULL", {"x": 0})
    assert match("x IS NOT NULL", {"x": ""})
    assert not match("x IS NOT NULL", {"x": None})
    assert match("NOT x IS NULL", {"x": False})


def test_exists_distinguishes_missing_from_null() -> None:
    assert match("EXISTS(x)", {"x": None})
    assert not match("EXISTS(x)", {})
    assert match("NOT EXISTS (x)", {})
    assert match("EXISTS([my prop])", {"my prop": 1})
    assert match("EXISTS(sys.Label)", system={"label": "l"})
    assert not match("EXISTS(sys.To)", system={"label": "l"})


def test_whole_expression_must_be_true() -> None:
    assert not match("x = 1 OR y = 2", {})
    assert match("x = 1 OR y = 2", {"y": 2})
    assert match("(x = 1 OR y = 2) AND NOT (z = 3)", {"y": 2, "z": 4})


# ------------------------------------------------------------------ IN / LIKE


def test_in_and_not_in() -> None:
    assert match("t IN ('queue', 'topic')", {"t": "topic"})
    assert not match("t IN ('queue', 'topic')", {"t": "Topic"})
    assert match("t NOT IN ('queue', 'topic')", {"t": "subscription"})
    assert not match("t IN ('a')", {})
    assert not match("t NOT IN ('a')", {})
    assert match("n IN (1, 2.5, 'x')", {"n": 2.5})
    assert match("n IN (1, 2)", {"n": 1.0})
    assert not match("n IN (1, 2)", {"n": True})  # TRUE is not 1
    assert not match("n IN (1, 2)", {"n": "1"})
    assert match("n IN (m, 3)", {"n": 4, "m": 4})  # non-constant items


def test_in_with_null_item_is_unknown_when_not_found() -> None:
    assert match("n IN (1, NULL)", {"n": 1})
    assert not match("n IN (2, NULL)", {"n": 1})
    assert not match("n NOT IN (2, NULL)", {"n": 1})


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("'%bus%'", "servicebus", True),
        ("'%bus%'", "bus", True),
        ("'%bus%'", "Bus", False),
        ("'b_s'", "bus", True),
        ("'b_s'", "bs", False),
        ("'abc'", "abc", True),
        ("'abc'", "abcd", False),
        ("'%'", "", True),
        ("'a.c'", "abc", False),
        ("'a.c'", "a.c", True),
        ("'(x)*'", "(x)*", True),
        ("'line%'", "line1\nline2", True),
    ],
)
def test_like_patterns(pattern: str, value: str, expected: bool) -> None:
    assert match(f"s LIKE {pattern}", {"s": value}) is expected


def test_like_escape_and_not_like() -> None:
    assert match(r"s LIKE 'ABC\%' ESCAPE '\'", {"s": "ABC%"})
    assert not match(r"s LIKE 'ABC\%' ESCAPE '\'", {"s": "ABCD"})
    assert match("s LIKE '!_x' ESCAPE '!'", {"s": "_x"})
    assert not match("s LIKE '!_x' ESCAPE '!'", {"s": "ax"})
    assert match("s NOT LIKE 'a%'", {"s": "ba"})
    assert not match("s NOT LIKE 'a%'", {})
    assert not match("s LIKE '1%'", {"s": 12})  # LIKE on a number is unknown
    assert match("s LIKE p", {"s": "abc", "p": "a%"})  # pattern from a property
    assert not match("s LIKE p", {"s": "abc"})


# ----------------------------------------------------------------------- properties


def test_system_properties() -> None:
    system = {
        "label": "orders",
        "messageid": "m1",
        "to": "Store5",
        "sequencenumber": 7,
        "correlationid": "c",
        "replyto": "r",
        "contenttype": "application/json",
        "sessionid": "s",
        "replytosessionid": "rs",
        "deliverycount": 1,
        "size": 99,
        "timetolive": timedelta(seconds=60),
    }
    assert match("sys.Label = 'orders'", system=system)
    assert match("sys.subject = 'orders'", system=system)
    assert match("SYS.LABEL LIKE '%der%'", system=system)
    assert match("sys.MessageId = 'm1' AND sys.SequenceNumber > 5", system=system)
    assert match("sys.To IN ('Store5','Store6') OR StoreId = 'Store8'", system=system)
    assert match("sys.ContentType = 'application/json' AND sys.Size < 100", system=system)
    assert match("sys.ReplyTo = 'r' AND sys.ReplyToSessionId = 'rs'", system=system)
    assert match("sys.SessionId = 's' AND sys.CorrelationId = 'c'", system=system)
    assert match("sys.DeliveryCount = 1", system=system)
    assert match("sys.TimeToLive IS NOT NULL", system=system)
    assert match("sys.[Label] = 'orders'", system=system)
    assert match("sys.Label = 'x'", system={"subject": "x"})
    assert match("sys.To IS NULL", system={})  # known but absent: NULL, not an error
    assert not match("Label = 'orders'", system=system)  # unprefixed means user


def test_user_properties_scopes_and_identifiers() -> None:
    user = {"Store Id": "s1", "HR-EmployeeID": 7, "odd]name": 1, "sys": 2, "plain": 3}
    assert match("[Store Id] = 's1'", user)
    assert match("user.[Store Id] = 's1'", user)
    assert match("\"Store Id\" = 's1'", user)
    assert match("[HR-EmployeeID] = 7", user)
    assert match("[odd]]name] = 1", user)
    assert match("sys = 2", user)
    assert match("USER.plain = 3 AND user.PLAIN = 3", user)
    assert match("[user].plain = 3", user)
    assert match("prop_ünicode = 1", {"prop_ünicode": 1})


def test_user_property_names_are_case_insensitive_exact_first() -> None:
    assert match("color = 'red'", {"Color": "red"})
    assert match("COLOR = 'red'", {"color": "red"})
    assert match("Color = 'red'", {"Color": "red", "color": "blue"})
    assert match("EXISTS(COLOR)", {"color": None})
    assert match("color IS NULL", {"Colour": "red"})


def test_keywords_are_case_insensitive() -> None:
    assert match("a is null and b = true or c not in (1) and not exists(d)", {"b": True})
    assert match("x Like 'a%' EsCaPe '!'", {"x": "ab"})


# ----------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("expression", "user"),
    [
        ("a + b * 2 = 7", {"a": 1, "b": 3}),
        ("(a + b) * 2 = 8", {"a": 1, "b": 3}),
        ("a - b - 1 = 5", {"a": 10, "b": 4}),
        ("a / b = 3", {"a": 7, "b": 2}),
        ("a / b = -3", {"a": -7, "b": 2}),  # truncates toward zero like C# long
        ("a % b = -1", {"a": -7, "b": 2}),  # remainder takes the dividend's sign
        ("a % b = 1", {"a": 7, "b": -2}),
        ("a / b = 3.5", {"a": 7.0, "b": 2}),
        ("a % b = 1.5", {"a": 7.5, "b": 2}),
        ("-a = -5", {"a": 5}),
        ("a * 1.5 = 3", {"a": 2}),
        ("s + 't' = 'st'", {"s": "s"}),
        ("1 + 2 * 3 = 7", {}),
    ],
)
def test_arithmetic(expression: str, user: dict[str, Any]) -> None:
    assert match(expression, user)


@pytest.mark.parametrize(
    "expression",
    ["a / 0 = 0", "a % 0 = 0", "a / b = 0", "NOT (a / 0 = 0)", "a - 's' = 1", "-s = 1", "t * 2 = 2"],
)
def test_arithmetic_errors_are_unknown(expression: str) -> None:
    assert not match(expression, {"a": 1, "b": 0.0, "s": "x", "t": True})


# ------------------------------------------------------------------------ functions


def test_functions() -> None:
    assert match("newid() IS NOT NULL")
    assert not match("newid() = newid()")
    assert match("property('color') = 'red'", {"color": "red"})
    assert match("p('sys.Label') = 'l'", system={"label": "l"})
    assert match("property('user.x') = 1", {"x": 1})
    assert match("property(name) = 5", {"name": "target", "target": 5})
    assert match("property(name) = 'l'", {"name": "sys.label"}, {"label": "l"})
    assert not match("property(name) = 1", {"name": "sys.nope"})
    assert match("p = 1", {"p": 1})  # a property named like the function


# ---------------------------------------------------------------- true / false / 1=1


def test_true_false_filters() -> None:
    assert true_filter().matches({}, {})
    assert not false_filter().matches({}, {})
    assert true_filter().expression == "1=1"
    assert false_filter().expression == "1=0"
    assert match("1=1")
    assert not match("1=0")
    assert match("TRUE")
    assert not match("FALSE")
    assert not match("NULL")
    assert match("flag", {"flag": True})  # a boolean property as the condition
    assert not match("flag", {"flag": "yes"})


def test_filters_satisfy_protocol() -> None:
    filters = [sql_filter("1=1"), true_filter(), false_filter(), correlation_filter(label="x")]
    for candidate in filters:
        assert isinstance(candidate, Filter)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("expression", "position", "fragment"),
    [
        ("a = ", 4, "expected a value"),
        ("a = 'open", 4, "unclosed string"),
        ("[open = 1", 0, "unclosed delimited"),
        ("sys.Nope = 1", 4, "unknown system property sys.Nope"),
        ("a = 1 b", 6, "found 'b'"),
        ("a = 1)", 5, "found ')'"),
        ("(a = 1", 6, "expected ')'"),
        ("a == 1", 3, "expected a value"),
        ("a = 1 AND", 9, "end of expression"),
        ("a IN ()", 6, "found ')'"),
        ("a IN (1, 2", 10, "')'"),
        ("a IS 1", 5, "NULL after IS"),
        ("EXISTS(1)", 7, "EXISTS takes a property"),
        ("a LIKE 1", 2, "LIKE pattern must be a string"),
        ("a LIKE 'x' ESCAPE 'ab'", 2, "single-character"),
        ("a LIKE 'x!' ESCAPE '!'", 2, "ends with its escape"),
        ("foo(1) = 1", 0, "unknown function foo()"),
        ("a = 1 # 2", 6, "unexpected character '#'"),
        ("a = 99999999999999999999", 4, "64-bit"),
        ("a + 1", 0, "not a condition"),
        ("'x'", 0, "not a condition"),
        ("a = 1 AND 2", 10, "expected a condition"),
        ("NOT 5", 4, "expected a condition"),
        ("a = 1 = 2", 6, "found '='"),
        ("sys. = 1", 5, "expected a property name"),
        ("AND = 1", 0, "expected a value"),
    ],
)
def test_syntax_errors_name_the_position(expression: str, position: int, fragment: str) -> None:
    with pytest.raises(FilterError) as caught:
        sql_filter(expression)
    message = str(caught.value)
    assert f"at position {position}:" in message
    assert fragment in message
    assert caught.value.position == position


@pytest.mark.parametrize("expression", ["", "   ", "\n"])
def test_empty_expression_is_an_error(expression: str) -> None:
    with pytest.raises(FilterError, match="empty"):
        sql_filter(expression)


def test_filter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        sql_filter("a =")


def test_too_long_expression() -> None:
    clause = "a = 1 OR "
    text = clause * (1100 // len(clause)) + "a = 1"
    with pytest.raises(FilterError, match="1024"):
        sql_filter(text)
    assert sql_filter("a = '" + "x" * 1000 + "'")  # just under the limit is fine


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 65 + "a = 1" + ")" * 65,
        "NOT " * 70 + "a = 1",
        "-" * 100 + "a = 1",
        "a" + " + a" * 100 + " = 1",
        "(" * 400 + "a = 1" + ")" * 400,
    ],
)
def test_deep_nesting_is_a_filter_error_not_recursion(expression: str) -> None:
    with pytest.raises(FilterError, match="nested deeper|limit"):
        sql_filter(expression)


def test_moderate_nesting_is_fine() -> None:
    assert match("(" * 40 + "a = 1" + ")" * 40, {"a": 1})
    assert match(" AND ".join(["a = 1"] * 100), {"a": 1})  # flat chains do not nest
    assert match("1" + " + 1" * 200 + " = 201")  # constant chains fold


_SQLISH = st.text(alphabet="ab ()'[]=<>!+-*/%.,_1.5eE" + '"', max_size=40) | st.lists(
    st.sampled_from(
        [
            "a",
            "sys.Label",
            "user.b",
            "NOT",
            "AND",
            "OR",
            "IS",
            "NULL",
            "IN",
            "LIKE",
            "ESCAPE",
            "EXISTS",
            "(",
            ")",
            "=",
            "<>",
            "'x'",
            "1",
            "2.5",
            ",",
            "+",
            "-",
            "TRUE",
            "newid()",
            "p('a')",
            "%",
        ]
    ),
    max_size=14,
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(_SQLISH)
def test_fuzz_only_filter_errors_and_boolean_results(text: str) -> None:
    try:
        compiled = sql_filter(text)
    except FilterError:
        return
    for user in ({}, {"a": 1, "b": "x"}, {"a": None, "b": True}):
        assert compiled.matches({"label": "x"}, user) in (True, False)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.booleans(),
        st.text(max_size=8),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.booleans(),
        st.text(max_size=8),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
)
def test_property_equality_agrees_with_same_kind_equality(left: Any, right: Any) -> None:
    def kind(v: Any) -> str:
        return "bool" if isinstance(v, bool) else "str" if isinstance(v, str) else "num"

    expected = kind(left) == kind(right) and left == right
    assert match("x = y", {"x": left, "y": right}) is expected
    assert match("x <> y", {"x": left, "y": right}) is (kind(left) == kind(right) and left != right)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_string_literal_round_trip(value: str) -> None:
    literal = "'" + value.replace("'", "''") + "'"
    assert match(f"s = {literal}", {"s": value})
    escaped = value.replace("!", "!!").replace("%", "!%").replace("_", "!_").replace("'", "''")
    assert match(f"s LIKE '{escaped}' ESCAPE '!'", {"s": value})
    assert match(f"s LIKE '{escaped}%' ESCAPE '!'", {"s": value + "tail"})


# -------------------------------------------------------------------- correlation


def test_correlation_filter_fields() -> None:
    f = correlation_filter(correlation_id="c1", label="orders", to="store")
    system = {"correlationid": "c1", "label": "orders", "to": "store", "messageid": "m"}
    assert f.matches(system, {})
    assert not f.matches({**system, "label": "Orders"}, {})
    assert not f.matches({"correlationid": "c1", "label": "orders"}, {})
    assert correlation_filter(label="x").matches({"subject": "x"}, {})


def test_correlation_filter_all_system_fields() -> None:
    f = correlation_filter(
        correlation_id="c",
        message_id="m",
        to="t",
        reply_to="r",
        label="l",
        session_id="s",
        reply_to_session_id="rs",
        content_type="ct",
    )
    system = {
        "correlationid": "c",
        "messageid": "m",
        "to": "t",
        "replyto": "r",
        "label": "l",
        "sessionid": "s",
        "replytosessionid": "rs",
        "contenttype": "ct",
    }
    assert f.matches(system, {})
    for key in system:
        assert not f.matches({**system, key: "other"}, {}), key


def test_correlation_filter_properties_exact() -> None:
    f = correlation_filter(properties={"kind": "emit", "hops": 0, "flag": True})
    assert f.matches({}, {"kind": "emit", "hops": 0, "flag": True, "extra": 1})
    assert not f.matches({}, {"kind": "emit", "hops": 0})
    assert not f.matches({}, {"kind": "emit", "hops": 0, "flag": 1})
    assert not f.matches({}, {"kind": "emit", "hops": "0", "flag": True})
    assert not f.matches({}, {"Kind": "emit", "hops": 0, "flag": True})


def test_correlation_filter_ids_of_other_amqp_types() -> None:
    guid = uuid.uuid4()
    assert correlation_filter(message_id=str(guid)).matches({"messageid": guid}, {})
    assert correlation_filter(message_id=guid).matches({"messageid": guid}, {})
    assert not correlation_filter(message_id="1").matches({"messageid": 2}, {})


def test_correlation_filter_validation() -> None:
    with pytest.raises(FilterError, match="at least one"):
        correlation_filter()
    with pytest.raises(FilterError):
        correlation_filter(properties={"": 1})
    with pytest.raises(FilterError):
        correlation_filter(properties={"a": None})
    f = correlation_filter(label="x", properties={"a": 1})
    assert isinstance(f, CorrelationFilter)
    assert f == correlation_filter(label="x", properties={"a": 1})
    assert "label='x'" in repr(f)


# ------------------------------------------------------------------------- actions


def test_action_set_and_remove() -> None:
    action = sql_action("SET sio_hops = sio_hops + 1; SET sys.Label = 'routed'; REMOVE sio_target_node")
    system: dict[str, Any] = {"label": "orig"}
    user: dict[str, Any] = {"sio_hops": 0, "sio_target_node": "node-a", "keep": 1}
    action.apply(system, user)
    assert user == {"sio_hops": 1, "keep": 1}
    assert system == {"label": "routed"}


def test_action_statements_without_semicolons_apply_in_order() -> None:
    action = SqlRuleAction("set a = 1 SET b = a + 1;; remove c;")
    user: dict[str, Any] = {"c": 0}
    action.apply({}, user)
    assert user == {"a": 1, "b": 2}


def test_action_case_insensitive_targets_and_values() -> None:
    user: dict[str, Any] = {"Color": "red"}
    sql_action("SET color = 'blue'").apply({}, user)
    assert user == {"Color": "blue"}
    sql_action("REMOVE COLOR").apply({}, user)
    assert user == {}
    sql_action("SET missing_copy = missing").apply({}, user)
    assert user == {"missing_copy": None}  # unknown is stored as NULL
    sql_action("SET flag = x > 1, SET id = newid()".replace(",", ";")).apply({}, user)
    assert user["flag"] is None and isinstance(user["id"], uuid.UUID)


def test_action_sys_targets() -> None:
    system: dict[str, Any] = {"to": "a", "subject": None}
    sql_action("SET sys.To = sys.To + '-x'; REMOVE sys.ContentType; SET sys.Subject = 'l'").apply(system, {})
    assert system["to"] == "a-x" and system["label"] == "l"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no SET or REMOVE"),
        ("; ;", "no SET or REMOVE"),
        ("SET", "expected a property name after SET"),
        ("SET a 1", "expected '='"),
        ("SET a =", "expected a value"),
        ("UPDATE a = 1", "expected SET or REMOVE"),
        ("SET sys.SequenceNumber = 1", "read-only"),
        ("REMOVE sys.EnqueuedTimeUtc", "read-only"),
        ("SET sys.Nope = 1", "unknown system property"),
        ("SET a = 'x", "unclosed string"),
        ("SET a = 1 garbage", "expected SET or REMOVE"),
    ],
)
def test_action_errors(text: str, fragment: str) -> None:
    with pytest.raises(FilterError, match=fragment):
        sql_action(text)


def test_equality_and_repr() -> None:
    assert sql_filter("a = 1") == sql_filter("a = 1")
    assert hash(sql_filter("a = 1")) == hash(sql_filter("a = 1"))
    assert sql_filter("a = 1") != sql_filter("a = 2")
    assert "a = 1" in repr(sql_filter("a = 1"))
    assert sql_action("SET a = 1") == sql_action("SET a = 1")
