"""A local runner for the Function App: ``python -m function_runner``.

It loads ``function_app.app``, reads every function's bindings from the app's own metadata
(``app.get_functions()`` -> ``get_function_json()``) and runs them the way the Functions host
would, without Core Tools:

* ``serviceBusTrigger`` (topic/subscription or queue): an aio peek-lock receiver through the
  binding's ``connection`` setting (``<Name>`` connection string or ``<Name>__fullyQualifiedNamespace``),
  the message (or batch) encoded as the host encodes trigger input and decoded by the
  ``azure.functions`` library's own converter (:mod:`.host_encoding`), complete on success, abandon on
  exception (Service Bus redelivers, then dead-letters after MaxDeliveryCount), lock renewal;
  ``maxConcurrentCalls``, ``prefetchCount`` and ``maxAutoLockRenewalDuration`` from ``host.json``.
* ``httpTrigger``: an aiohttp server at ``/api/<route>``; the request encoded as the host's
  ``RpcHttp`` and decoded by the library's ``HttpRequestConverter``, the response through its
  ``HttpResponseConverter``; ``authLevel`` ``function``/``admin`` need the local key
  (``x-functions-key`` header or ``?code=``); CORS from ``local.settings.json`` ``Host.CORS``.
"""

from .app import FunctionSpec, load_app, load_settings, specs_of

__all__ = ["FunctionSpec", "load_app", "load_settings", "specs_of"]
