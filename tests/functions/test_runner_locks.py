"""The local runner's Service Bus trigger with several messages in flight, each handled for
longer than the lock duration: its ``AutoLockRenewer`` renews all the locks at once (which
used to make the emulator close the connection, issue 14) and every message is completed once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from function_runner.app import FunctionSpec
from function_runner.servicebus import ServiceBusTriggerRunner
from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator

CONFIG = {"UserConfig": {"Namespaces": [{"Name": "runner", "Queues": [
    {"Name": "work", "Properties": {"LockDuration": "PT5S", "MaxDeliveryCount": 5}}]}]}}


@pytest.fixture(scope="module")
def runner_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("runner-locks"), CONFIG) as proc:
        yield proc


@pytest.mark.slow  # waits past a 5 s lock
async def test_several_in_flight_messages_outlive_their_lock(runner_emulator: EmulatorProcess) -> None:
    cs = runner_emulator.connection_string("runner")
    calls: list[tuple[str | None, int]] = []

    async def slow_handler(msg: Any) -> None:
        calls.append((msg.message_id, msg.delivery_count))
        await asyncio.sleep(6.5)  # longer than the 5 s lock (Azure's shortest)

    spec = FunctionSpec("slow", {"type": "serviceBusTrigger", "name": "msg", "queueName": "work",
                                 "connection": "ServiceBusConnection"}, (), slow_handler)
    logs: list[str] = []
    async with servicebus_client(connection_string=cs) as client:
        async with client.get_queue_sender("work") as sender:
            await sender.send_messages([ServiceBusMessage(f"job {i}", message_id=f"job-{i}") for i in range(6)])
        runner = ServiceBusTriggerRunner(spec, client, {"maxConcurrentCalls": 16,
                                                        "maxAutoLockRenewalDuration": "00:01:00"}, logs.append)
        task = asyncio.create_task(runner.run())
        try:
            for _ in range(150):  # at most 30 s
                if runner.completed >= 6 or task.done():
                    break
                await asyncio.sleep(0.2)
        finally:
            runner.stop()
            await asyncio.wait_for(task, 30)
        async with client.get_queue_receiver("work") as receiver:
            left = await receiver.peek_messages(10, sequence_number=1)
    assert logs == [], logs  # no receiver error, no failed renewal or settlement
    assert runner.completed == 6 and runner.abandoned == 0
    # each message handled exactly once, on its first delivery (the locks never lapsed)
    assert sorted(calls) == [(f"job-{i}", 1) for i in range(6)]
    assert left == []
