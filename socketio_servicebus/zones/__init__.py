"""Trust zones on the bus: proof of origin (Ed25519 per zone), a policy per zone, and bounds on
amplification. See ``docs/security.md`` ("Trust zones") and ``docs/wire-format.md``."""

from socketio_servicebus.zones.bounds import HelloLimiter, NodeAdmission
from socketio_servicebus.zones.config import Zone, ZoneConfigError, ZoneKind, ZoneSet, load_zones
from socketio_servicebus.zones.guard import BusGuard, claimed_origin
from socketio_servicebus.zones.policy import Reason, Verdict
from socketio_servicebus.zones.signing import PROP_KID, PROP_SIG, PROP_ZONE, ZoneKey

__all__ = [
    "BusGuard",
    "HelloLimiter",
    "NodeAdmission",
    "PROP_KID",
    "PROP_SIG",
    "PROP_ZONE",
    "Reason",
    "Verdict",
    "Zone",
    "ZoneConfigError",
    "ZoneKey",
    "ZoneKind",
    "ZoneSet",
    "claimed_origin",
    "load_zones",
]
