"""Exporting the spans of :mod:`socketio_servicebus.tracing`: the ``[otel]`` extra.

``pip install "socketio-servicebus[otel]"`` brings the OpenTelemetry SDK, the OTLP/HTTP exporter
and the Azure Monitor exporter.  The library itself never imports this module; the edges do
(``relay_node``, ``function_app.py``, your app) through :func:`settings_from_env` and
:func:`configure`, which honour the standard variables:

* ``OTEL_SDK_DISABLED=true``: nothing is configured;
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``; ``grpc``
  needs ``opentelemetry-exporter-otlp-proto-grpc``): read by the OTLP exporter itself;
* ``OTEL_TRACES_EXPORTER``: ``none`` turns the OTLP export from those variables off,
  ``console`` adds a console exporter;
* ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: when set, the SDK's own choice;
  otherwise parent-based with a trace-id ratio of ``default_ratio`` (1 % by default);
* ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``: win over the names given here;
* ``OTEL_BSP_*``: the batch span processor's delays and sizes.

Two more, of this project: ``SIO_OTEL_EXTRA_ENDPOINTS`` (comma-separated OTLP/HTTP base URLs
exported to *as well*; the local stack points it at its collector) and
``APPLICATIONINSIGHTS_CONNECTION_STRING`` (Azure Monitor, set by Bicep on the Function App).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace

try:
    from opentelemetry.sdk.resources import Resource
except ImportError:  # pragma: no cover - exercised by the packaging tests' bare wheel
    raise ImportError("socketio_servicebus.otel needs the 'otel' extra: "
                      "pip install 'socketio-servicebus[otel]'") from None
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from socketio_servicebus.tracing import install_log_correlation

__all__ = [
    "ENV_EXTRA_ENDPOINTS",
    "DEFAULT_RATIO",
    "OtelSettings",
    "settings_from_env",
    "configure",
]

log = logging.getLogger("socketio_servicebus.otel")

ENV_EXTRA_ENDPOINTS = "SIO_OTEL_EXTRA_ENDPOINTS"
#: Sampling ratio when ``OTEL_TRACES_SAMPLER`` is not set: low, for production.
DEFAULT_RATIO = 0.01


@dataclass(frozen=True)
class OtelSettings:
    service_name: str
    instance_id: str
    region: str | None = None
    #: export with OTLP to the endpoint of the standard OTEL_EXPORTER_OTLP_* variables
    otlp_from_env: bool = False
    #: OTLP/HTTP base URLs (``/v1/traces`` is appended) exported to as well
    extra_endpoints: tuple[str, ...] = ()
    console: bool = False
    azure_monitor_connection_string: str | None = None
    #: None: the SDK reads OTEL_TRACES_SAMPLER; else parent-based trace-id ratio
    ratio: float | None = DEFAULT_RATIO

    @property
    def exports(self) -> bool:
        return bool(self.otlp_from_env or self.extra_endpoints or self.console
                    or self.azure_monitor_connection_string)


def settings_from_env(
    service_name: str,
    instance_id: str,
    *,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
    default_ratio: float = DEFAULT_RATIO,
) -> OtelSettings | None:
    """What the environment asks for, or None when tracing stays off (disabled, or nowhere to
    export to)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()}
    otlp = "otlp" in exporters and bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    extra = tuple(u.strip() for u in env.get(ENV_EXTRA_ENDPOINTS, "").split(",") if u.strip())
    settings = OtelSettings(
        service_name=service_name,
        instance_id=instance_id,
        region=region,
        otlp_from_env=otlp,
        extra_endpoints=extra,
        console="console" in exporters,
        azure_monitor_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or None,
        ratio=None if env.get("OTEL_TRACES_SAMPLER") else default_ratio,
    )
    return settings if settings.exports else None


def _resource(settings: OtelSettings) -> Resource:
    attrs: dict[str, str] = {"service.instance.id": settings.instance_id}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = settings.service_name
    if settings.region:
        attrs["cloud.region"] = settings.region
    return Resource.create(attrs)


def _otlp_exporter(endpoint: str | None) -> SpanExporter:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if endpoint is None and protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise RuntimeError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                               "(the [otel] extra ships OTLP over HTTP)") from None
        exporter: SpanExporter = GrpcExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoint is None:
        return OTLPSpanExporter()
    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def _processors(settings: OtelSettings) -> list[SpanProcessor]:
    out: list[SpanProcessor] = []
    if settings.otlp_from_env:
        out.append(BatchSpanProcessor(_otlp_exporter(None)))
    for url in settings.extra_endpoints:
        out.append(BatchSpanProcessor(_otlp_exporter(url)))
    if settings.console:
        out.append(BatchSpanProcessor(ConsoleSpanExporter()))
    if settings.azure_monitor_connection_string:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        credential = _azure_monitor_credential(os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""))
        out.append(BatchSpanProcessor(AzureMonitorTraceExporter(
            connection_string=settings.azure_monitor_connection_string, credential=credential)))
    return out


def _azure_monitor_credential(auth: str) -> object | None:
    """Entra ID for Application Insights with local auth off (Bicep: ``DisableLocalAuth``), from
    ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``ClientId=<id>;Authorization=AAD``)."""
    parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=parts.get("ClientId") or None)


def sampler_for(settings: OtelSettings) -> Sampler | None:
    if settings.ratio is None:
        return None  # the SDK reads OTEL_TRACES_SAMPLER / _ARG
    return ParentBased(TraceIdRatioBased(settings.ratio))


def configure(settings: OtelSettings, *, set_global: bool = True) -> TracerProvider:
    """A tracer provider exporting where ``settings`` say, made the global one by default;
    also makes log records carry ``trace_id`` / ``span_id``. Call ``shutdown()`` on it at exit
    to flush."""
    provider = TracerProvider(resource=_resource(settings), sampler=sampler_for(settings))
    for processor in _processors(settings):
        provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    install_log_correlation()
    log.info("tracing on: service %s, instance %s, otlp env %s, extra %s, azure monitor %s, ratio %s",
             settings.service_name, settings.instance_id, settings.otlp_from_env, list(settings.extra_endpoints),
             bool(settings.azure_monitor_connection_string),
             "env" if settings.ratio is None else settings.ratio)
    return provider
