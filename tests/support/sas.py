"""A Service Bus SAS token, built as the SDK builds it, for tests that speak raw AMQP/HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote_plus


def sas_token(uri: str, name: str, key: str, expiry: int) -> str:
    signed = f"{quote_plus(uri)}\n{expiry}".encode()
    sig = base64.b64encode(hmac.new(key.encode(), signed, hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={quote_plus(uri)}&sig={quote_plus(sig)}&se={expiry}&skn={name}"
