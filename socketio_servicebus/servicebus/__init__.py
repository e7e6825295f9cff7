"""Service Bus plumbing: SDK clients from settings, the per-node subscription, retry rules."""
