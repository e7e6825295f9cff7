"""Service Bus triggers: peek-lock receive, the host's trigger encoding (``host_encoding``), complete/abandon."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from typing import Any

import azure.functions as func
from azure.servicebus import ServiceBusReceiveMode
from azure.servicebus.aio import AutoLockRenewer

from .app import FunctionSpec
from .host_encoding import check_binding, decode_service_bus

__all__ = ["to_func_message", "invoke", "ServiceBusTriggerRunner", "timespan_seconds"]


def to_func_message(msg: Any, *, data_type: str | None = None) -> func.ServiceBusMessage:
    """The message object the Python worker builds for one received ``msg``: encoded as the
    Functions host sends it, decoded by ``azure.functions``' own converter (see
    :mod:`function_runner.host_encoding`). ``delivery_count`` is 1-based, as the host reports it."""
    out = decode_service_bus([msg], many=False, data_type=data_type)
    if isinstance(out, list):  # the converter picks cardinality from the metadata it was given
        raise TypeError("expected one message")
    return out


async def invoke(spec: FunctionSpec, value: Any) -> Any:
    """Call the user function with its trigger argument; sync functions run in a thread."""
    kwargs = {str(spec.trigger["name"]): value}
    if inspect.iscoroutinefunction(spec.func):
        return await spec.func(**kwargs)
    result = await asyncio.to_thread(spec.func, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def timespan_seconds(value: Any, default: float) -> float:
    """``"00:05:00"`` / ``"1.00:00:00"`` -> seconds."""
    if value is None:
        return default
    m = re.match(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$", str(value))
    if not m:
        return default
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + float(s)


class ServiceBusTriggerRunner:
    """Runs one ``serviceBusTrigger`` function until :meth:`stop`."""

    def __init__(self, spec: FunctionSpec, client: Any, host: dict[str, Any], log: Callable[[str], None]) -> None:
        self.spec = spec
        self.client = client
        self.log = log
        self.max_calls = max(1, int(host.get("maxConcurrentCalls", 16)))
        self.prefetch = int(host.get("prefetchCount", 0))
        self.batch_size = max(1, int(host.get("maxMessageBatchSize", 1000)))
        self.renew_for = timespan_seconds(host.get("maxAutoLockRenewalDuration"), 300.0)
        self.auto_complete = bool(host.get("autoCompleteMessages", True))
        check_binding(spec.trigger)
        self.many = str(spec.trigger.get("cardinality") or "one").lower() == "many"
        self.data_type = spec.trigger.get("dataType")
        self.namespace = getattr(client, "fully_qualified_namespace", None)
        self._stop = asyncio.Event()
        self.completed = 0
        self.abandoned = 0

    def stop(self) -> None:
        self._stop.set()

    def _receiver(self) -> Any:
        t = self.spec.trigger
        kwargs = {"prefetch_count": self.prefetch, "receive_mode": ServiceBusReceiveMode.PEEK_LOCK}
        if t.get("queueName"):
            return self.client.get_queue_receiver(t["queueName"], **kwargs)
        return self.client.get_subscription_receiver(t["topicName"], t["subscriptionName"], **kwargs)

    async def run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                async with self._receiver() as receiver, AutoLockRenewer() as renewer:
                    backoff = 1.0
                    if self.many:
                        await self._loop_many(receiver, renewer)
                    else:
                        await self._loop_one(receiver, renewer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect with backoff, like the host
                if self._stop.is_set():
                    break
                self.log(f"{self.spec.name}: receiver error {type(exc).__name__}: {exc}; reconnecting in {backoff:.0f}s")
                try:
                    await asyncio.wait_for(self._stop.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 30.0)

    async def _loop_one(self, receiver: Any, renewer: Any) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._stop.is_set():
                free = self.max_calls - len(tasks)
                if free <= 0:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                msgs = await receiver.receive_messages(max_message_count=free, max_wait_time=1)
                for msg in msgs:
                    renewer.register(receiver, msg, max_lock_renewal_duration=self.renew_for)
                    task = asyncio.create_task(self._handle(receiver, [msg]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop_many(self, receiver: Any, renewer: Any) -> None:
        while not self._stop.is_set():
            msgs = await receiver.receive_messages(max_message_count=self.batch_size, max_wait_time=1)
            if msgs:
                for msg in msgs:
                    renewer.register(receiver, msg, max_lock_renewal_duration=self.renew_for)
                await self._handle(receiver, msgs)

    async def _handle(self, receiver: Any, msgs: list[Any]) -> None:
        first = msgs[0]
        try:
            # Decoding failures (a body the binding cannot take) fail the invocation, as in the host.
            arg = decode_service_bus(msgs, many=self.many, data_type=self.data_type, namespace=self.namespace)
            await invoke(self.spec, arg)
        except Exception as exc:  # noqa: BLE001 - the host's behaviour: the invocation failed
            self.abandoned += len(msgs)
            self.log(
                f"{self.spec.name}: message {first.message_id} failed (delivery {(first.delivery_count or 0) + 1}): "
                f"{type(exc).__name__}: {str(exc)[:300]} -> abandon"
            )
            for msg in msgs:
                try:
                    await receiver.abandon_message(msg)
                except Exception as settle_exc:  # noqa: BLE001
                    self.log(f"{self.spec.name}: abandon failed: {settle_exc}")
            return
        if not self.auto_complete:
            return
        for msg in msgs:
            try:
                await receiver.complete_message(msg)
                self.completed += 1
            except Exception as settle_exc:  # noqa: BLE001 - lock lost: SB will redeliver
                self.log(f"{self.spec.name}: complete failed for {msg.message_id}: {settle_exc}")
