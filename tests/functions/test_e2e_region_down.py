"""A target region that is down: the router fails, Service Bus redelivers, the copy arrives once
the region is back; regions that already had it get duplicates a receiver drops by id.

``eu`` and ``us`` live in one emulator process, ``asia`` in another one that the test stops and
restarts on the same port (regions are separate namespaces in Azure too).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode

from socketio_servicebus.manager.dedupe import SeenIds
from socketio_servicebus.servicebus.clients import servicebus_client
from socketio_servicebus.wire.envelope import Batch
from tests.support.emulator_process import EmulatorProcess
from tests.support.stack_config import region_settings, stack_config

from .conftest import Runner, free_port
from .helpers import emit_envelope

pytestmark = pytest.mark.slow
TOPIC = "socketio"


class TwoEmulators:
    def __init__(self, main: EmulatorProcess, asia_config: Any, runner: Runner | None = None) -> None:
        self.main = main
        self.asia_config = asia_config
        self.asia: EmulatorProcess | None = None
        self.runner = runner
        self.asia_conn = ""

    def start_asia(self) -> None:
        self.asia = EmulatorProcess(self.asia_config)
        self.asia.start()
        self.asia_conn = self.asia.connection_string("asia")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoEmulators]:
    d = tmp_path_factory.mktemp("down")
    (d / "main.json").write_text(json.dumps(stack_config(["eu", "us"], extra_subscriptions={"test-all": "1=1"})))
    (d / "asia.json").write_text(json.dumps(
        stack_config(["asia"], ports={"asia": free_port()}, extra_subscriptions={"test-all": "1=1"})))
    main = EmulatorProcess(d / "main.json")
    main.start()
    two = TwoEmulators(main, d / "asia.json")
    two.start_asia()
    conns = {"eu": main.connection_string("eu"), "us": main.connection_string("us"), "asia": two.asia_conn}
    # only the routers matter here; TablesConnection etc. are not needed
    runner = Runner(region_settings(conns, home="eu"), only="router_eu,router_us,router_asia")
    two.runner = runner
    try:
        runner.start()
        yield two
    finally:
        runner.stop()
        if two.asia is not None:
            two.asia.stop()
        main.stop()


async def drain(conn: str, message_id: str, seconds: float) -> list[Any]:
    out = []
    async with servicebus_client(connection_string=conn) as client, client.get_subscription_receiver(
            TOPIC, "test-all", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE) as rx:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            out += [m for m in await rx.receive_messages(max_message_count=50, max_wait_time=0.5)
                    if m.message_id == message_id]
    return out


async def test_region_down_retry_then_delivered_with_droppable_duplicates(stack: TwoEmulators) -> None:
    assert stack.asia is not None and stack.runner is not None
    stack.asia.stop()
    batch = Batch((emit_envelope("eu", data="while asia is down"),), 0, ("eu",))
    mid = f"down-{uuid.uuid4().hex[:8]}"
    async with servicebus_client(connection_string=stack.main.connection_string("eu")) as client, \
            client.get_topic_sender(TOPIC) as sender:
        await sender.send_messages(ServiceBusMessage(batch.encode(), message_id=mid,
                                                     application_properties=batch.application_properties()))
    failures = stack.runner.wait_for(rf"router_eu: message {mid} failed .*ForwardFailed.*\['asia'\]", timeout=60, count=2)
    assert "(delivery 1)" in failures[0] and "(delivery 2)" in failures[1]
    stack.start_asia()  # same port, topology re-created (the emulator keeps nothing across restarts)
    stack.runner.wait_for(rf"router\[eu\] message {mid} .* -> \[.asia., .us.\]", timeout=120)

    asia = await drain(stack.asia_conn, mid, 3)
    us = await drain(stack.main.connection_string("us"), mid, 1)
    assert len(asia) == 1
    attempts = len(stack.runner.lines(rf"router_eu: message {mid} failed")) + 1
    assert len(us) == attempts >= 3  # one copy per attempt: us already had it after attempt 1
    # every copy carries the same message id (Service Bus duplicate detection can drop them) and
    # the same envelope id (the node-side dedupe drops them)
    assert {m.message_id for m in us} == {mid}
    seen = SeenIds()
    fresh = [env.id for m in us for env in Batch.decode(b"".join(m.body)).envelopes if seen.add(env.id)]
    assert fresh == [batch.envelopes[0].id]
