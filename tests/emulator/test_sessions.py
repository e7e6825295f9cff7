"""Sessions are not emulated: a session receiver is refused at attach with a clear error.

Before, the emulator ignored the SDK's ``com.microsoft:session-filter`` and served the link as a
plain receiver: the SDK got messages with no session lock (``locked_until_utc=None``) and no
session isolation, which looks like it works and does not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusError

from socketio_servicebus.servicebus.clients import servicebus_client
from tests.support.emulator_process import EmulatorProcess, running_emulator

CONFIG = {
    "UserConfig": {
        "Namespaces": [
            {
                "Name": "sessions",
                "Queues": [
                    {"Name": "sessionful", "Properties": {"RequiresSession": True}},
                    {"Name": "plain", "Properties": {}},
                ],
            }
        ]
    }
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with running_emulator(tmp_path_factory.mktemp("sessions"), CONFIG) as proc:
        yield proc


@pytest.mark.parametrize("session_id", ["s1", NEXT_AVAILABLE_SESSION])
async def test_a_session_receiver_is_refused_with_a_reason(emulator: EmulatorProcess, session_id: object) -> None:
    async with servicebus_client(connection_string=emulator.connection_string("sessions")) as client:
        async with client.get_queue_sender("sessionful") as sender:
            await sender.send_messages(ServiceBusMessage("in a session", session_id="s1"))
        started = time.monotonic()
        with pytest.raises(ServiceBusError) as refused:
            async with client.get_queue_receiver("sessionful", session_id=session_id, max_wait_time=2) as receiver:
                await receiver.receive_messages(max_wait_time=2)
        assert time.monotonic() - started < 10
        text = str(refused.value)
        assert "Session receivers are not supported" in text and "sessionful" in text
        assert "amqp:not-implemented" in text
        # the refusal is the link's alone: the same client still receives from another queue
        async with client.get_queue_sender("plain") as sender:
            await sender.send_messages(ServiceBusMessage("plain"))
        async with client.get_queue_receiver("plain", max_wait_time=2) as receiver:
            got = await receiver.receive_messages(max_message_count=1, max_wait_time=5)
            assert [str(m) for m in got] == ["plain"]
            await receiver.complete_message(got[0])
