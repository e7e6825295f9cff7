"""The real azure-servicebus aio SDK against the emulator over TCP: the thinnest path."""

from __future__ import annotations

from azure.servicebus import ServiceBusMessage, ServiceBusReceiveMode

from socketio_servicebus.servicebus.clients import servicebus_client


async def test_send_batch_receive_complete_and_filter(conn_str: str) -> None:
    async with servicebus_client(connection_string=conn_str) as client:
        async with client.get_topic_sender("smoke") as sender:
            await sender.send_messages(
                ServiceBusMessage(
                    "hello", application_properties={"color": "red"}, message_id="m-1", subject="greeting"
                )
            )
            batch = await sender.create_message_batch()
            for i in range(5):
                batch.add_message(ServiceBusMessage(f"b{i}", application_properties={"color": "blue"}))
            await sender.send_messages(batch)

        async with client.get_subscription_receiver("smoke", "all") as receiver:
            got = []
            while len(got) < 6:
                msgs = await receiver.receive_messages(max_message_count=10, max_wait_time=3)
                assert msgs, f"only {len(got)} of 6 messages arrived"
                for msg in msgs:
                    assert msg.locked_until_utc is not None and msg.locked_until_utc > msg.enqueued_time_utc
                    got.append(msg)
                    await receiver.complete_message(msg)
        assert [str(m) for m in got] == ["hello", "b0", "b1", "b2", "b3", "b4"]
        first = got[0]
        assert first.message_id == "m-1"
        assert first.subject == "greeting"
        assert first.application_properties == {b"color": b"red"}
        assert first.delivery_count == 0
        seqs = [m.sequence_number for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 6

        async with client.get_subscription_receiver(
            "smoke", "red", receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
        ) as receiver:
            msgs = await receiver.receive_messages(max_message_count=10, max_wait_time=2)
            assert [str(m) for m in msgs] == ["hello"]
