"""Host/port and HTTP proxy URLs, validated once for the library and the relay node (pure).

:func:`host_and_port` is the one check of an URL's host and port (the emulator's
``Endpoint=sb://host:port``, a proxy URL); :func:`parse_proxy_url` validates an HTTP proxy
URL (``http://[user:password@]host:port``) into :class:`ProxySettings`. Errors are
:class:`~socketio_servicebus.errors.ConnectionSettingsError`, never echoing a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from socketio_servicebus.errors import ConnectionSettingsError

__all__ = ["ProxySettings", "host_and_port", "masked", "parse_proxy_url"]

PROXY_FORM = "the proxy must look like http://[user:password@]host:port"


@dataclass(frozen=True)
class ProxySettings:
    """An HTTP proxy for Service Bus over WebSockets (``http://[user:password@]host:port``)."""

    hostname: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """``http://[user:***@]host:port``: safe to log."""
        auth = f"{self.username}:***@" if self.username else ""
        return f"http://{auth}{_bracketed(self.hostname)}:{self.port}"

    def url(self) -> str:
        """``http://[user:password@]host:port`` (percent-encoded) for azure-core's ``proxies``."""
        auth = ""
        if self.username:
            auth = f"{quote(self.username, safe='')}:{quote(self.password or '', safe='')}@"
        return f"http://{auth}{_bracketed(self.hostname)}:{self.port}"

    def to_sdk(self) -> dict[str, object]:
        """The SDK's ``http_proxy`` dict. The async SDK hands ``proxy_hostname`` to aiohttp, which
        needs a URL: a bare host fails with ``InvalidURL``, so it is given as ``http://host``."""
        out: dict[str, object] = {"proxy_hostname": f"http://{_bracketed(self.hostname)}", "proxy_port": self.port}
        if self.username:
            out["username"] = self.username
            out["password"] = self.password or ""
        return out


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def masked(text: str) -> str:
    """``text`` with any password replaced by ``***`` (error messages must not echo it)."""
    scheme, sep, rest = text.partition("://") if "://" in text else ("", "", text)
    if "@" not in rest:
        return text
    userinfo, _, host = rest.rpartition("@")
    if ":" not in userinfo:
        return text
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def host_and_port(url: str, what: str) -> tuple[str, int | None]:
    """Host and port (``None`` if absent) of ``url`` (``scheme://[user@]host[:port]...`` or
    ``//authority``); ``what`` names it in the error."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConnectionSettingsError(f"{what}: the port must be 1-65535") from None
    if not parts.hostname:
        raise ConnectionSettingsError(f"{what}: no host")
    return parts.hostname, port


def parse_proxy_url(text: str, form: str = PROXY_FORM) -> ProxySettings:
    """Validate an HTTP proxy URL: scheme http, a host, a port; user:password allowed.
    ``form`` starts every error message (e.g. the command-line flag and its form)."""
    raw = text.strip()
    shown = masked(raw)
    if "://" not in raw:
        raise ConnectionSettingsError(f"{form}: add the scheme, e.g. http://{shown} (not {shown!r})")
    parts = urlsplit(raw)
    if parts.scheme.lower() != "http":
        raise ConnectionSettingsError(f"{form}: the proxy is spoken to in plain HTTP (CONNECT), so use http://, "
                                      f"not {parts.scheme}:// ({shown!r})")
    host, port = host_and_port(raw, f"{form} ({shown!r})")
    if port is None or port == 0:
        raise ConnectionSettingsError(f"{form}: add the proxy's port, e.g. http://{host}:3128 ({shown!r})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConnectionSettingsError(f"{form}: no path or query after the port ({shown!r})")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return ProxySettings(host, port, user, password)
