"""The cross-region router function's work: decode, plan (``shared.routing.plan``), forward.

Called by ``function_app.py`` with a ``func.ServiceBusMessage`` received on region X's ``router``
subscription. Outcomes:

* forwarded to every planned target -> return normally (the host completes the message);
* a target's send failed -> :class:`ForwardFailed` is raised after *all* targets were tried; the
  host abandons the message and Service Bus redelivers it. Targets that succeeded get the copy
  again on the retry: same ``message_id``, same envelope ids, so Service Bus duplicate detection
  (if enabled on the topic) or the nodes' envelope-id dedupe drop it;
* the message can never be routed (malformed body, unknown region, ...) -> :class:`Unroutable` is
  raised; after ``maxDeliveryCount`` deliveries Service Bus dead-letters it
  (``MaxDeliveryCountExceeded``). The real reason is logged on every attempt. See
  ``docs/functions.md`` for why this, and not an explicit dead-letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from azure.servicebus import ServiceBusMessage as SBMessage

from shared import telemetry
from shared.appcontext import AppContext
from shared.routing.plan import RoutePlan, Unroutable
from socketio_servicebus.topology import PROP_ROUTE_DONE, PROP_TARGET_NODE, PROP_TARGET_REGION
from socketio_servicebus.wire.envelope import Batch, EnvelopeError
from socketio_servicebus.zones.signing import PROP_KID, PROP_SIG, PROP_ZONE, forward_body

__all__ = ["ForwardFailed", "Unroutable", "route_message", "message_body", "message_properties"]

log = logging.getLogger("socketio_servicebus.router")


class ForwardFailed(RuntimeError):
    """At least one target region could not be reached; the message will be redelivered."""

    def __init__(self, failed: dict[str, BaseException], succeeded: list[str]) -> None:
        self.failed = failed
        self.succeeded = succeeded
        detail = ", ".join(f"{r}: {type(e).__name__}: {e}"[:300] for r, e in failed.items())
        super().__init__(f"forwarding failed to {sorted(failed)} (succeeded: {succeeded}); {detail}")


def message_body(msg: Any) -> bytes:
    """Body bytes of a ``func.ServiceBusMessage``."""
    body = msg.get_body()
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body or b"")


def _plain(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def message_properties(msg: Any) -> dict[str, Any]:
    """Application properties with ``str`` keys (the host gives str; the SDK gives bytes)."""
    props = getattr(msg, "application_properties", None) or getattr(msg, "user_properties", None) or {}
    return {_plain(k): _plain(v) for k, v in props.items()}


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


async def route_message(ctx: AppContext, region: str, msg: Any) -> RoutePlan:
    """Forward ``msg`` (received in ``region``) to the next regions; returns what was done."""
    props = message_properties(msg)
    if _truthy(props.get(PROP_ROUTE_DONE)) or (props.get(PROP_TARGET_NODE) and not props.get(PROP_TARGET_REGION)):
        # The subscription rule keeps these out (a target without a region stays in the region it
        # was sent in); handled anyway so a direct call is harmless.
        return RoutePlan()
    body = message_body(msg)
    try:
        batch = Batch.decode(body)
    except EnvelopeError as exc:
        raise _unroutable(msg, region, Unroutable(f"malformed:{exc.reason}", exc.description)) from None
    first = batch.envelopes[0]
    if first.target_node is not None and first.target_region is None:
        return RoutePlan()
    try:
        plan = ctx.settings.region_map.plan(region, batch.visited, batch.hops, target_region=first.target_region)
    except Unroutable as exc:
        raise _unroutable(msg, region, exc) from None
    if not plan.hops:
        return plan
    signer_zone: str | None = None
    if ctx.guard is not None:
        from shared.trust import admit

        admitted = admit(ctx, "router", region, msg, body, props, batch)
        if not admitted.whole:
            return RoutePlan()  # forged or out of its zone's policy: never forwarded (counted, logged)
        signer_zone = admitted.zone

    message_id = msg.message_id or hashlib.sha256(body).hexdigest()[:32]
    results = await asyncio.gather(
        *(_forward(ctx, msg, body, props, batch, hop.target, hop.route_done, message_id, signer_zone)
          for hop in plan.hops),
        return_exceptions=True,
    )
    failed: dict[str, BaseException] = {}
    succeeded: list[str] = []
    for hop, result in zip(plan.hops, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            failed[hop.target] = result
        else:
            succeeded.append(hop.target)
    if failed:
        log.warning(
            "router[%s] message %s: %d target(s) failed, will be redelivered (delivery %s): %s",
            region, message_id, len(failed), msg.delivery_count, sorted(failed),
        )
        raise ForwardFailed(failed, succeeded)
    log.info(
        "router[%s] message %s (%s, %d envelopes, hops=%d%s) -> %s",
        region, message_id, first.kind.value, len(batch.envelopes), batch.hops,
        f", to node {first.target_node} in {first.target_region}" if first.target_region else "",
        list(plan.targets),
    )
    return plan


def _unroutable(msg: Any, region: str, exc: Unroutable) -> Unroutable:
    log.error(
        "router[%s] message %s is unroutable (%s): %s; delivery %s - Service Bus dead-letters it "
        "after maxDeliveryCount (reason MaxDeliveryCountExceeded)",
        region, msg.message_id, exc.reason, exc.description, msg.delivery_count,
    )
    return exc


async def _forward(
    ctx: AppContext, msg: Any, body: bytes, props: dict[str, Any], batch: Batch, target: str, route_done: bool,
    message_id: str, signer_zone: str | None = None
) -> None:
    with telemetry.forward_span(ctx.settings.topic, target, batch.forwarded(target)) as fwd:
        app_props = fwd.application_properties(route_done=route_done)
        out_body = fwd.encode()
        if ctx.guard is not None and signer_zone == ctx.guard.local.name:
            # signed by the router's own (cloud) zone: re-signed after the check, with the trace
            # context of this forward in its envelopes
            app_props.update(ctx.guard.sign(fwd, out_body))
        elif ctx.guard is not None:
            # another zone's (a site's) signature is kept: the signed envelopes go on byte for byte,
            # only the routing prefix (hops, visited) changes, so the site stays attributable in
            # every region (and its envelopes keep the sending node's trace context)
            out_body = forward_body(body, batch.hops, batch.visited, fwd.hops, fwd.visited) or out_body
            app_props.update({k: props[k] for k in (PROP_ZONE, PROP_KID, PROP_SIG) if k in props})
        out = SBMessage(
            out_body,
            message_id=message_id,
            application_properties=app_props,
            content_type=getattr(msg, "content_type", None),
            correlation_id=getattr(msg, "correlation_id", None),
            subject=getattr(msg, "subject", None) or getattr(msg, "label", None),
        )
        sender = await ctx.region_sender(target)
        try:
            await sender.send_messages(out)
        except Exception:
            await ctx.drop_sender(sender)
            raise
