"""The emulator's management API driven by the real azure-servicebus ``ServiceBusAdministrationClient``.

The aio client comes from ``socketio_servicebus.servicebus.clients.admin_client`` (the project's one way to make it); one
test drives the sync client through a RequestsTransport that rewrites https:// to http://. Data
plane traffic goes through the SDK's ServiceBusClient over AMQP, so rules created over HTTP are
checked against what is really delivered.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode
from azure.servicebus._base_handler import ServiceBusSharedKeyCredential
from azure.servicebus.aio.management import ServiceBusAdministrationClient
from azure.servicebus.management import (
    CorrelationRuleFilter,
    FalseRuleFilter,
    SqlRuleAction,
    SqlRuleFilter,
    TrueRuleFilter,
)
from azure.servicebus.management import ServiceBusAdministrationClient as SyncAdminClient

from servicebus_emulator import admin_xml
from socketio_servicebus.servicebus.clients import admin_client, parse_connection_string, servicebus_client
from tests.support.emulator_process import EmulatorProcess

ATOM = "http://www.w3.org/2005/Atom"
SB = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def admin(conn_str: str) -> AsyncIterator[ServiceBusAdministrationClient]:
    async with admin_client(connection_string=conn_str) as client:
        yield client


@pytest.fixture
async def topic(admin: ServiceBusAdministrationClient) -> AsyncIterator[str]:
    name = unique("admin-topic")
    await admin.create_topic(name)
    yield name
    try:
        await admin.delete_topic(name)
    except ResourceNotFoundError:
        pass


def _base_url(conn_str: str) -> str:
    endpoint = parse_connection_string(conn_str)["endpoint"]
    return "http://" + endpoint[len("sb://"):].strip("/")


def _sas_header(conn_str: str) -> str:
    parts = parse_connection_string(conn_str)
    credential = ServiceBusSharedKeyCredential(parts["sharedaccesskeyname"], parts["sharedaccesskey"])
    return credential.get_token("https://" + parts["endpoint"][len("sb://"):].strip("/")).token


async def _raw(conn_str: str, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None, auth: bool = True) -> tuple[int, str]:
    """One raw HTTP request to the admin API (for what the SDK cannot send)."""
    all_headers = {"Content-Type": "application/atom+xml"}
    if auth:
        all_headers["Authorization"] = _sas_header(conn_str)
    all_headers.update(headers or {})
    async with aiohttp.ClientSession() as session:
        async with session.request(method, _base_url(conn_str) + path, data=body, headers=all_headers) as resp:
            return resp.status, await resp.text()


async def _receive_all(receiver: Any, expected: int, wait: float = 2.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msgs = await receiver.receive_messages(max_message_count=20, max_wait_time=wait)
        got.extend(msgs)
        if not msgs and len(got) >= expected:
            break
    return got


# -- topics ---------------------------------------------------------------------------------------
async def test_topic_crud_round_trips_properties(admin: ServiceBusAdministrationClient) -> None:
    name = unique("crud-topic")
    created = await admin.create_topic(
        name,
        default_message_time_to_live=datetime.timedelta(minutes=5),
        max_size_in_megabytes=2048,
        requires_duplicate_detection=True,
        duplicate_detection_history_time_window=datetime.timedelta(minutes=2),
        enable_batched_operations=False,
        auto_delete_on_idle=datetime.timedelta(hours=3),
        max_message_size_in_kilobytes=1024,
    )
    assert created.name == name
    assert created.default_message_time_to_live == datetime.timedelta(minutes=5)
    assert created.max_size_in_megabytes == 2048
    assert created.requires_duplicate_detection is True
    assert created.duplicate_detection_history_time_window == datetime.timedelta(minutes=2)
    assert created.enable_batched_operations is False
    assert created.auto_delete_on_idle == datetime.timedelta(hours=3)
    assert created.max_message_size_in_kilobytes == 1024

    fetched = await admin.get_topic(name)
    assert fetched.default_message_time_to_live == datetime.timedelta(minutes=5)
    assert fetched.status == "Active"

    runtime = await admin.get_topic_runtime_properties(name)
    assert runtime.subscription_count == 0
    assert runtime.size_in_bytes == 0
    assert runtime.scheduled_message_count == 0
    assert runtime.created_at_utc is not None and runtime.updated_at_utc is not None

    fetched.default_message_time_to_live = datetime.timedelta(minutes=9)
    await admin.update_topic(fetched, max_size_in_megabytes=4096)
    updated = await admin.get_topic(name)
    assert updated.default_message_time_to_live == datetime.timedelta(minutes=9)
    assert updated.max_size_in_megabytes == 4096
    assert (await admin.get_topic_runtime_properties(name)).updated_at_utc >= runtime.updated_at_utc

    names = [t.name async for t in admin.list_topics()]
    assert name in names and "socketio" in names
    assert name in [t.name async for t in admin.list_topics_runtime_properties()]

    await admin.delete_topic(name)
    with pytest.raises(ResourceNotFoundError):
        await admin.get_topic(name)
    assert name not in [t.name async for t in admin.list_topics()]


async def test_existing_and_missing_entities_map_to_sdk_errors(
    admin: ServiceBusAdministrationClient, topic: str
) -> None:
    with pytest.raises(ResourceExistsError, match="already exists"):
        await admin.create_topic(topic)
    with pytest.raises(ResourceExistsError):
        await admin.create_queue(topic)  # topics and queues share one name space
    with pytest.raises(ResourceNotFoundError, match="could not be found"):
        await admin.get_topic(unique("missing"))
    with pytest.raises(ResourceNotFoundError):
        await admin.delete_topic(unique("missing"))
    with pytest.raises(ResourceNotFoundError):
        await admin.create_subscription(unique("missing"), "sub")
    with pytest.raises(ResourceNotFoundError):
        await admin.get_subscription(topic, "missing")
    with pytest.raises(ResourceNotFoundError):
        await admin.delete_subscription(topic, "missing")
    await admin.create_subscription(topic, "sub")
    with pytest.raises(ResourceExistsError):
        await admin.create_subscription(topic, "SUB")  # names are case-insensitive
    with pytest.raises(ResourceNotFoundError):
        await admin.get_rule(topic, "sub", "missing")
    with pytest.raises(ResourceNotFoundError):
        await admin.delete_rule(topic, "sub", "missing")
    with pytest.raises(ResourceExistsError):
        await admin.create_rule(topic, "sub", "$Default")

    # update of something deleted in between: If-Match: * on a missing entity
    props = await admin.get_subscription(topic, "sub")
    await admin.delete_subscription(topic, "sub")
    with pytest.raises(ResourceNotFoundError):
        await admin.update_subscription(topic, props)
    topic_props = await admin.get_topic(topic)
    await admin.delete_topic(topic)
    with pytest.raises(ResourceNotFoundError):
        await admin.update_topic(topic_props)


# -- subscriptions --------------------------------------------------------------------------------
async def test_subscription_crud_round_trips_properties(
    admin: ServiceBusAdministrationClient, topic: str, conn_str: str
) -> None:
    host = parse_connection_string(conn_str)["endpoint"][len("sb://"):].strip("/")
    forward = unique("fwd")
    await admin.create_queue(forward)
    created = await admin.create_subscription(
        topic,
        "full",
        lock_duration=datetime.timedelta(seconds=45),
        requires_session=True,
        default_message_time_to_live=datetime.timedelta(hours=2),
        dead_lettering_on_message_expiration=True,
        dead_lettering_on_filter_evaluation_exceptions=False,
        max_delivery_count=4,
        enable_batched_operations=False,
        forward_to=forward,
        user_metadata="owned by tests",
        auto_delete_on_idle=datetime.timedelta(days=1),
    )
    assert created.name == "full"
    assert created.lock_duration == datetime.timedelta(seconds=45)
    assert created.requires_session is True
    assert created.default_message_time_to_live == datetime.timedelta(hours=2)
    assert created.dead_lettering_on_message_expiration is True
    assert created.dead_lettering_on_filter_evaluation_exceptions is False
    assert created.max_delivery_count == 4
    assert created.enable_batched_operations is False
    assert created.forward_to == f"sb://{host}/{forward}"
    assert created.user_metadata == "owned by tests"
    assert created.auto_delete_on_idle == datetime.timedelta(days=1)
    assert created.status == "Active"

    plain = await admin.create_subscription(topic, "plain")
    assert plain.lock_duration == datetime.timedelta(minutes=1)
    assert plain.max_delivery_count == 10
    assert plain.requires_session is False
    assert plain.default_message_time_to_live > datetime.timedelta(days=10_000)  # "never"
    assert plain.auto_delete_on_idle > datetime.timedelta(days=10_000)

    fetched = await admin.get_subscription(topic, "full")
    fetched.max_delivery_count = 2
    fetched.lock_duration = datetime.timedelta(seconds=20)
    await admin.update_subscription(topic, fetched, status="ReceiveDisabled", user_metadata="changed")
    updated = await admin.get_subscription(topic, "full")
    assert updated.max_delivery_count == 2
    assert updated.lock_duration == datetime.timedelta(seconds=20)
    assert updated.status == "ReceiveDisabled"
    assert updated.user_metadata == "changed"
    assert updated.requires_session is True
    assert updated.forward_to == f"sb://{host}/{forward}"

    runtime = await admin.get_subscription_runtime_properties(topic, "full")
    assert runtime.updated_at_utc >= runtime.created_at_utc
    assert runtime.accessed_at_utc is not None

    # values the service refuses
    with pytest.raises(HttpResponseError, match="LockDuration"):
        await admin.create_subscription(topic, "too-long-lock", lock_duration=datetime.timedelta(minutes=6))
    with pytest.raises(HttpResponseError, match="RequiresSession cannot be changed"):
        await admin.update_subscription(topic, updated, requires_session=False)

    assert sorted([s.name async for s in admin.list_subscriptions(topic)]) == ["full", "plain"]
    counts = {s.name: s.total_message_count async for s in admin.list_subscriptions_runtime_properties(topic)}
    assert counts == {"full": 0, "plain": 0}
    assert (await admin.get_topic_runtime_properties(topic)).subscription_count == 2

    await admin.delete_subscription(topic, "full")
    with pytest.raises(ResourceNotFoundError):
        await admin.get_subscription(topic, "full")
    assert [s.name async for s in admin.list_subscriptions(topic)] == ["plain"]
    await admin.delete_queue(forward)


async def test_list_pages_with_skip_and_top(admin: ServiceBusAdministrationClient, topic: str,
                                            conn_str: str) -> None:
    names = [f"page-{i:02d}" for i in range(7)]
    for name in names:
        await admin.create_subscription(topic, name)
    pages = [[s.name async for s in page] async for page in admin.list_subscriptions(topic, max_page_size=3).by_page()]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [n for p in pages for n in p] == names

    for i in range(4):
        await admin.create_rule(topic, "page-00", f"rule-{i}", filter=SqlRuleFilter(f"n = {i}"))
    rule_pages = [[r.name async for r in page]
                  async for page in admin.list_rules(topic, "page-00", max_page_size=2).by_page()]
    assert rule_pages == [["$Default", "rule-0"], ["rule-1", "rule-2"], ["rule-3"]]

    topics = [t.name async for t in admin.list_topics(max_page_size=1)]
    assert topic in topics and len(topics) == len(set(topics))

    # the raw feed: a second <link> (next) only while more entries follow
    status, text = await _raw(conn_str, "GET", f"/{topic}/subscriptions?$skip=6&$top=3&api-version=2021-05")
    assert status == 200 and 'rel="next"' not in text and "page-06" in text
    status, text = await _raw(conn_str, "GET", f"/{topic}/subscriptions?$skip=0&$top=3&api-version=2021-05")
    assert status == 200 and 'rel="next"' in text and "$skip=3&amp;$top=3" in text


# -- rules ----------------------------------------------------------------------------------------
async def test_rule_crud_round_trips_filters_and_actions(
    admin: ServiceBusAdministrationClient, topic: str
) -> None:
    await admin.create_subscription(topic, "rules")
    default = await admin.get_rule(topic, "rules", "$Default")
    assert isinstance(default.filter, TrueRuleFilter) and default.action is None

    sql = await admin.create_rule(
        topic, "rules", "sql",
        filter=SqlRuleFilter("color = @color AND size > @min", parameters={"@color": "red", "@min": 2}),
        action=SqlRuleAction("SET tagged = @tag", parameters={"@tag": "yes"}),
    )
    assert isinstance(sql.filter, SqlRuleFilter)
    assert sql.filter.sql_expression == "color = @color AND size > @min"
    assert dict(sql.filter.parameters) == {"@color": "red", "@min": 2}
    assert sql.action.sql_expression == "SET tagged = @tag"
    assert dict(sql.action.parameters) == {"@tag": "yes"}
    assert sql.created_at_utc is not None

    corr = await admin.create_rule(
        topic, "rules", "corr",
        filter=CorrelationRuleFilter(correlation_id="order-1", label="created",
                                     properties={"region": "eu", "priority": 3, "vip": True}),
    )
    assert isinstance(corr.filter, CorrelationRuleFilter)
    assert corr.filter.correlation_id == "order-1" and corr.filter.label == "created"
    assert dict(corr.filter.properties) == {"region": "eu", "priority": 3, "vip": True}
    assert corr.action is None

    await admin.create_rule(topic, "rules", "never", filter=FalseRuleFilter())
    await admin.create_rule(topic, "rules", "always")  # the SDK's default filter: TrueRuleFilter

    listed = {r.name: r async for r in admin.list_rules(topic, "rules")}
    assert sorted(listed) == ["$Default", "always", "corr", "never", "sql"]
    assert isinstance(listed["never"].filter, FalseRuleFilter)
    assert isinstance(listed["always"].filter, TrueRuleFilter)
    assert dict(listed["corr"].filter.properties) == {"region": "eu", "priority": 3, "vip": True}
    assert dict(listed["sql"].filter.parameters) == {"@color": "red", "@min": 2}

    fetched = await admin.get_rule(topic, "rules", "sql")
    fetched.filter = SqlRuleFilter("color = 'blue'")
    fetched.action = None
    await admin.update_rule(topic, "rules", fetched)
    updated = await admin.get_rule(topic, "rules", "sql")
    assert updated.filter.sql_expression == "color = 'blue'" and updated.action is None
    assert updated.created_at_utc == sql.created_at_utc

    with pytest.raises(ResourceExistsError):
        await admin.create_rule(topic, "rules", "SQL")
    await admin.delete_rule(topic, "rules", "sql")
    with pytest.raises(ResourceNotFoundError):
        await admin.get_rule(topic, "rules", "sql")
    assert sorted([r.name async for r in admin.list_rules(topic, "rules")]) == ["$Default", "always", "corr", "never"]


async def test_invalid_sql_filter_is_a_clear_http_error(admin: ServiceBusAdministrationClient, topic: str) -> None:
    await admin.create_subscription(topic, "strict")
    with pytest.raises(HttpResponseError) as info:
        await admin.create_rule(topic, "strict", "broken", filter=SqlRuleFilter("color = 'red"))
    assert info.value.status_code == 400
    assert "Rule 'broken'" in str(info.value) and "string" in str(info.value)
    with pytest.raises(HttpResponseError) as info:
        await admin.create_rule(topic, "strict", "broken-action", action=SqlRuleAction("SET = 1"))
    assert info.value.status_code == 400
    # nothing half-made: neither rule exists, and a bad update keeps the old rule
    assert [r.name async for r in admin.list_rules(topic, "strict")] == ["$Default"]
    default = await admin.get_rule(topic, "strict", "$Default")
    default.filter = SqlRuleFilter("AND OR")
    with pytest.raises(HttpResponseError) as info:
        await admin.update_rule(topic, "strict", default)
    assert info.value.status_code == 400
    assert isinstance((await admin.get_rule(topic, "strict", "$Default")).filter, TrueRuleFilter)


async def test_created_sql_rule_filters_and_acts_on_delivered_messages(
    admin: ServiceBusAdministrationClient, topic: str, conn_str: str
) -> None:
    await admin.create_subscription(topic, "red")
    await admin.delete_rule(topic, "red", "$Default")
    await admin.create_rule(
        topic, "red", "big-red",
        filter=SqlRuleFilter("color = @color AND size > @min", parameters={"@color": "red", "@min": 2}),
        action=SqlRuleAction("SET tagged = 'yes'"),
    )
    async with servicebus_client(connection_string=conn_str) as client:
        async with client.get_topic_sender(topic) as sender:
            await sender.send_messages([
                ServiceBusMessage("big red", application_properties={"color": "red", "size": 5}),
                ServiceBusMessage("small red", application_properties={"color": "red", "size": 1}),
                ServiceBusMessage("big blue", application_properties={"color": "blue", "size": 9}),
            ])
        async with client.get_subscription_receiver(
            topic, "red", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive_all(receiver, 1)
    assert [str(m) for m in got] == ["big red"]
    assert got[0].application_properties.get(b"tagged") == b"yes"


async def test_created_correlation_rule_filters_delivered_messages(
    admin: ServiceBusAdministrationClient, topic: str, conn_str: str
) -> None:
    await admin.create_subscription(topic, "orders")
    await admin.delete_rule(topic, "orders", "$Default")
    await admin.create_rule(
        topic, "orders", "eu-order-1",
        filter=CorrelationRuleFilter(correlation_id="order-1", properties={"region": "eu"}),
    )
    async with servicebus_client(connection_string=conn_str) as client:
        async with client.get_topic_sender(topic) as sender:
            await sender.send_messages([
                ServiceBusMessage("match", correlation_id="order-1", application_properties={"region": "eu"}),
                ServiceBusMessage("other order", correlation_id="order-2", application_properties={"region": "eu"}),
                ServiceBusMessage("other region", correlation_id="order-1", application_properties={"region": "us"}),
                ServiceBusMessage("no props", correlation_id="order-1"),
            ])
        async with client.get_subscription_receiver(
            topic, "orders", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive_all(receiver, 1)
    assert [str(m) for m in got] == ["match"]


async def test_subscription_with_default_rule_description(
    admin: ServiceBusAdministrationClient, topic: str, conn_str: str
) -> None:
    """azure-servicebus 7.15 has no ``default_rule=`` yet, so this PUT is written by hand."""
    body = (
        f'<entry xmlns="{ATOM}"><content type="application/xml">'
        f'<SubscriptionDescription xmlns="{SB}" xmlns:i="{XSI}">'
        "<LockDuration>PT30S</LockDuration>"
        '<DefaultRuleDescription><Filter i:type="SqlFilter"><SqlExpression>kind = \'keep\'</SqlExpression>'
        '</Filter><Action i:type="EmptyRuleAction"/><Name>only-keep</Name></DefaultRuleDescription>'
        "</SubscriptionDescription></content></entry>"
    ).encode()
    status, text = await _raw(conn_str, "PUT", f"/{topic}/subscriptions/filtered?api-version=2021-05", body)
    assert status == 201, text
    rules = [r async for r in admin.list_rules(topic, "filtered")]
    assert [r.name for r in rules] == ["only-keep"]
    assert rules[0].filter.sql_expression == "kind = 'keep'"
    assert (await admin.get_subscription(topic, "filtered")).lock_duration == datetime.timedelta(seconds=30)

    async with servicebus_client(connection_string=conn_str) as client:
        async with client.get_topic_sender(topic) as sender:
            await sender.send_messages([
                ServiceBusMessage("drop", application_properties={"kind": "drop"}),
                ServiceBusMessage("keep", application_properties={"kind": "keep"}),
            ])
        async with client.get_subscription_receiver(
            topic, "filtered", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            got = await _receive_all(receiver, 1)
    assert [str(m) for m in got] == ["keep"]


# -- runtime properties ---------------------------------------------------------------------------
async def test_runtime_properties_count_messages(
    admin: ServiceBusAdministrationClient, topic: str, conn_str: str
) -> None:
    await admin.create_subscription(topic, "counted")
    async with servicebus_client(connection_string=conn_str) as client:
        async with client.get_topic_sender(topic) as sender:
            await sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(4)])
            later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
            await sender.schedule_messages(ServiceBusMessage("later"), later)
        async with client.get_subscription_receiver(topic, "counted") as receiver:
            first = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(first) == 1
            await receiver.dead_letter_message(first[0], reason="test", error_description="counted as DLQ")

    runtime = await admin.get_subscription_runtime_properties(topic, "counted")
    assert runtime.active_message_count == 3
    assert runtime.dead_letter_message_count == 1
    assert runtime.total_message_count == 4
    assert runtime.transfer_message_count == 0 and runtime.transfer_dead_letter_message_count == 0
    assert runtime.accessed_at_utc >= runtime.created_at_utc

    topic_runtime = await admin.get_topic_runtime_properties(topic)
    assert topic_runtime.scheduled_message_count == 1
    assert topic_runtime.subscription_count == 1
    assert topic_runtime.size_in_bytes > 0


# -- queues ---------------------------------------------------------------------------------------
async def test_queue_crud_and_runtime_properties(admin: ServiceBusAdministrationClient, conn_str: str) -> None:
    name = unique("admin-queue")
    created = await admin.create_queue(
        name,
        lock_duration=datetime.timedelta(seconds=15),
        max_delivery_count=3,
        default_message_time_to_live=datetime.timedelta(hours=1),
        dead_lettering_on_message_expiration=True,
        requires_session=False,
        max_size_in_megabytes=1024,
    )
    assert created.lock_duration == datetime.timedelta(seconds=15)
    assert created.max_delivery_count == 3
    assert created.dead_lettering_on_message_expiration is True
    assert created.max_size_in_megabytes == 1024

    async with servicebus_client(connection_string=conn_str) as client:
        async with client.get_queue_sender(name) as sender:
            await sender.send_messages([ServiceBusMessage("a"), ServiceBusMessage("b")])
            later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
            await sender.schedule_messages(ServiceBusMessage("later"), later)
    runtime = await admin.get_queue_runtime_properties(name)
    assert runtime.active_message_count == 2
    assert runtime.scheduled_message_count == 1
    assert runtime.dead_letter_message_count == 0
    assert runtime.size_in_bytes > 0

    props = await admin.get_queue(name)
    props.max_delivery_count = 8
    await admin.update_queue(props, lock_duration=datetime.timedelta(seconds=40))
    updated = await admin.get_queue(name)
    assert updated.max_delivery_count == 8 and updated.lock_duration == datetime.timedelta(seconds=40)

    assert name in [q.name async for q in admin.list_queues()]
    assert name in [q.name async for q in admin.list_queues_runtime_properties()]
    with pytest.raises(ResourceExistsError):
        await admin.create_topic(name)
    await admin.delete_queue(name)
    with pytest.raises(ResourceNotFoundError):
        await admin.get_queue(name)


async def test_namespace_properties(admin: ServiceBusAdministrationClient) -> None:
    props = await admin.get_namespace_properties()
    assert props.name == "sbemulatorns"
    assert props.messaging_sku == "Standard"


# -- auto delete on idle --------------------------------------------------------------------------
async def test_auto_delete_on_idle_deletes_idle_subscription_but_not_one_with_a_receiver(
    admin: ServiceBusAdministrationClient, topic: str, conn_str: str
) -> None:
    """Azure's minimum is 5 minutes; the emulator accepts seconds so this can be watched."""
    idle = datetime.timedelta(seconds=1)
    await admin.create_subscription(topic, "idle", auto_delete_on_idle=idle)
    await admin.create_subscription(topic, "held", auto_delete_on_idle=idle)
    assert (await admin.get_subscription(topic, "idle")).auto_delete_on_idle == idle
    async with servicebus_client(connection_string=conn_str) as client:
        async with client.get_subscription_receiver(topic, "held"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    await admin.get_subscription(topic, "idle")
                except ResourceNotFoundError:
                    break
                await asyncio.sleep(0.25)
            else:
                pytest.fail("the idle subscription was not deleted")
            await asyncio.sleep(1.5)  # well past the idle time, with a receiver attached
            held = await admin.get_subscription(topic, "held")
            assert held.name == "held"
    assert [s.name async for s in admin.list_subscriptions(topic)] == ["held"]


# -- authorization --------------------------------------------------------------------------------
async def test_wrong_key_is_client_authentication_error(conn_str: str, topic: str) -> None:
    key = re.search(r"SharedAccessKey=([^;]+)", conn_str).group(1)  # type: ignore[union-attr]
    wrong = conn_str.replace(f"SharedAccessKey={key}", "SharedAccessKey=not-the-key")
    assert wrong != conn_str
    async with admin_client(connection_string=wrong) as bad:
        with pytest.raises(ClientAuthenticationError, match="InvalidSignature"):
            await bad.get_topic(topic)
        with pytest.raises(ClientAuthenticationError):
            await bad.create_subscription(topic, "nope")
    unknown = conn_str.replace("SharedAccessKeyName=RootManageSharedAccessKey", "SharedAccessKeyName=nobody")
    async with admin_client(connection_string=unknown) as bad:
        with pytest.raises(ClientAuthenticationError, match="not known"):
            await bad.list_topics().__anext__()
    status, text = await _raw(conn_str, "GET", f"/{topic}?api-version=2021-05", auth=False)
    assert status == 401 and "Authorization" in text
    uri = _base_url(conn_str).replace("http://", "https://")
    expired = _sign(uri, "RootManageSharedAccessKey", key, int(time.time()) - 10)
    status, text = await _raw(conn_str, "GET", f"/{topic}?api-version=2021-05", auth=False,
                              headers={"Authorization": expired})
    assert status == 401 and "ExpiredToken" in text


def _sign(uri: str, key_name: str, key: str, expiry: int) -> str:
    signed = f"{quote_plus(uri)}\n{expiry}".encode()
    sig = base64.b64encode(hmac.new(key.encode(), signed, hashlib.sha256).digest()).decode()
    return (f"SharedAccessSignature sr={quote_plus(uri)}&sig={quote_plus(sig)}"
            f"&se={expiry}&skn={key_name}")


LIMITED_KEY = "listen-send-key-value"


@pytest.fixture(scope="module")
def limited_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A namespace with a Manage policy and a Listen+Send-only policy ``app``."""
    config = EmulatorProcess.default_config({
        "Name": "limitedns",
        "SharedAccessPolicies": [
            {"Name": "RootManageSharedAccessKey", "Key": "SAS_KEY_VALUE", "Rights": ["Manage"]},
            {"Name": "app", "Key": LIMITED_KEY, "Rights": ["Listen", "Send"]},
        ],
        "Topics": [{"Name": "events", "Subscriptions": [{"Name": "existing"}]}],
    })
    path: Path = tmp_path_factory.mktemp("limited") / "Config.json"
    path.write_text(json.dumps(config))
    proc = EmulatorProcess(path)
    proc.start()
    yield proc
    proc.stop()


async def test_listen_send_key_cannot_manage_entities(limited_emulator: EmulatorProcess) -> None:
    manage = limited_emulator.connection_string("limitedns")
    app = manage.replace("SharedAccessKeyName=RootManageSharedAccessKey", "SharedAccessKeyName=app")
    app = app.replace("SharedAccessKey=SAS_KEY_VALUE", f"SharedAccessKey={LIMITED_KEY}")
    async with admin_client(connection_string=app) as weak:
        with pytest.raises(ClientAuthenticationError) as info:
            await weak.create_subscription("events", "new-sub")
        text = str(info.value)
        assert "Manage" in text and "'app'" in text and "Listen, Send" in text
        with pytest.raises(ClientAuthenticationError, match="Manage"):
            await weak.get_subscription("events", "existing")  # reads need Manage too, as on Azure
        with pytest.raises(ClientAuthenticationError, match="Manage"):
            await weak.delete_subscription("events", "existing")
    async with admin_client(connection_string=manage) as strong:
        assert [s.name async for s in strong.list_subscriptions("events")] == ["existing"]
    # the same key still works on the data plane
    async with servicebus_client(connection_string=app) as client:
        async with client.get_topic_sender("events") as sender:
            await sender.send_messages(ServiceBusMessage("still allowed"))


# -- raw HTTP edges -------------------------------------------------------------------------------
async def test_health_debug_and_hostile_bodies(conn_str: str, topic: str) -> None:
    status, text = await _raw(conn_str, "GET", "/health", auth=False)
    assert status == 200 and json.loads(text)["status"] == "healthy"
    status, text = await _raw(conn_str, "GET", "/$emulator/entities", auth=False)
    assert status == 200 and topic in json.loads(text)["topics"]

    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        f'<entry xmlns="{ATOM}"><content type="application/xml"><TopicDescription xmlns="{SB}">'
        "<UserMetadata>&lol2;</UserMetadata></TopicDescription></content></entry>"
    ).encode()
    status, text = await _raw(conn_str, "PUT", f"/{unique('dtd')}?api-version=2021-05", laughs)
    assert status == 400 and "DOCTYPE" in text

    huge = b"<entry>" + b" " * (1024 * 1024 + 10) + b"</entry>"
    status, _ = await _raw(conn_str, "PUT", f"/{unique('huge')}?api-version=2021-05", huge)
    assert status == 413

    status, text = await _raw(conn_str, "PUT", f"/{unique('junk')}?api-version=2021-05", b"<entry><oops")
    assert status == 400 and "well-formed" in text

    body = (f'<entry xmlns="{ATOM}"><content type="application/xml"><TopicDescription xmlns="{SB}">'
            "<DefaultMessageTimeToLive>soon</DefaultMessageTimeToLive></TopicDescription></content></entry>")
    status, text = await _raw(conn_str, "PUT", f"/{unique('bad-ttl')}?api-version=2021-05", body.encode())
    assert status == 400 and "DefaultMessageTimeToLive" in text

    status, text = await _raw(conn_str, "GET", f"/{topic}?api-version=2021-05")
    assert status == 200 and f'xmlns="{SB}"' in text and "<title type=\"text\">" in text


# -- the sync client ------------------------------------------------------------------------------
class _PlainHttpRequestsTransport(RequestsTransport):  # type: ignore[misc]
    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.startswith("https://"):
            request.url = "http://" + request.url[len("https://"):]
        return super().send(request, **kwargs)


def test_sync_admin_client_crud(conn_str: str) -> None:
    name = unique("sync-topic")
    with SyncAdminClient.from_connection_string(conn_str, transport=_PlainHttpRequestsTransport()) as admin:
        admin.create_topic(name, default_message_time_to_live=datetime.timedelta(minutes=3))
        admin.create_subscription(name, "sync-sub", max_delivery_count=5)
        admin.create_rule(name, "sync-sub", "corr", filter=CorrelationRuleFilter(properties={"k": "v"}))
        assert admin.get_topic(name).default_message_time_to_live == datetime.timedelta(minutes=3)
        assert admin.get_subscription(name, "sync-sub").max_delivery_count == 5
        assert [r.name for r in admin.list_rules(name, "sync-sub")] == ["$Default", "corr"]
        assert admin.get_subscription_runtime_properties(name, "sync-sub").active_message_count == 0
        with pytest.raises(ResourceExistsError):
            admin.create_subscription(name, "sync-sub")
        admin.delete_topic(name)
        with pytest.raises(ResourceNotFoundError):
            admin.get_topic(name)


# -- pure XML helpers -----------------------------------------------------------------------------
def test_sql_parameters_are_substituted_as_literals_outside_strings() -> None:
    params = {
        "@color": admin_xml.TypedValue("string", "it's red", "it's red"),
        "min": admin_xml.TypedValue("int", "2", 2),
        "@flag": admin_xml.TypedValue("boolean", "true", True),
    }
    expr = "color = @color AND size > @MIN AND note = '@color' AND [@color] = 1 AND ok = @flag AND x = @other"
    assert admin_xml.substitute_parameters(expr, params) == (
        "color = 'it''s red' AND size > 2 AND note = '@color' AND [@color] = 1 AND ok = TRUE AND x = @other"
    )
    spec = admin_xml.RuleSpec("r", "SqlFilter", "a = @color", {"@color": params["@color"]})
    assert spec.to_rule_config().sql == "a = 'it''s red'"
    assert admin_xml.RuleSpec("f", "FalseFilter", "1>1").to_rule_config().sql == "1=0"


def test_request_bodies_are_parsed_defensively() -> None:
    with pytest.raises(admin_xml.AdminXmlError, match="DOCTYPE"):
        admin_xml.parse_entry(b'<!DOCTYPE x [<!ENTITY a "b">]><entry/>')
    with pytest.raises(admin_xml.BodyTooLarge):
        admin_xml.parse_entry(b" " * (admin_xml.MAX_BODY_BYTES + 1))
    with pytest.raises(admin_xml.AdminXmlError, match="Atom <entry>"):
        admin_xml.parse_entry(b"<feed/>")
    desc = admin_xml.parse_entry(
        f'<entry xmlns="{ATOM}"><content><SubscriptionDescription xmlns="{SB}">'
        "<LockDuration>PT1M30S</LockDuration><RequiresSession>TRUE</RequiresSession>"
        "<MaxDeliveryCount>7</MaxDeliveryCount><CreatedAt>ignored</CreatedAt>"
        "</SubscriptionDescription></content></entry>".encode()
    )
    fields = admin_xml.read_fields(desc, admin_xml.SUBSCRIPTION_FIELDS)
    assert fields == {"LockDuration": 90.0, "RequiresSession": True, "MaxDeliveryCount": 7}
