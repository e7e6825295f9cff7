"""Emulator differences from Azure found by the reliability suite (kept as repros).

Found by the reliability suite and fixed in the emulator: a sender link attached to a topic used
to survive the topic's deletion (sends accepted and dropped). Azure detaches it with
``amqp:not-found``; so does the emulator now. The relay nodes cope either way: the manager opens a
fresh sender when it finds its subscription gone (``socketio_servicebus/manager/client_manager.py``, ``_listen``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import MessagingEntityNotFoundError, ServiceBusError

from socketio_servicebus.servicebus.clients import admin_client, servicebus_client
from tests.support.emulator_process import EmulatorProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    cfg = tmp_path_factory.mktemp("findings") / "Config.json"
    cfg.write_text(json.dumps(EmulatorProcess.default_config(
        {"Name": "ns", "Topics": [{"Name": "t", "Subscriptions": [{"Name": "s"}]}]})))
    proc = EmulatorProcess(cfg)
    proc.start()
    yield proc
    proc.stop()


async def test_deleting_a_topic_detaches_its_sender_links(emulator: EmulatorProcess) -> None:
    cs = emulator.connection_string("ns")
    async with servicebus_client(connection_string=cs) as client, client.get_topic_sender("t") as sender:
        await sender.send_messages(ServiceBusMessage(b"before"))
        async with admin_client(connection_string=cs) as admin:
            await admin.delete_topic("t")
            with pytest.raises((MessagingEntityNotFoundError, ServiceBusError)):
                await sender.send_messages(ServiceBusMessage(b"while the topic is gone"))
            await admin.create_topic("t")
            await admin.create_subscription("t", "s")
