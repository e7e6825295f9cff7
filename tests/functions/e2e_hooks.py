"""Hooks module loaded by the runner in the end-to-end tests (SIO_HOOKS_MODULE)."""

from shared.persistence.hooks import StoredEvent, hooks


@hooks.on("explode")
async def explode(event: StoredEvent) -> None:
    raise RuntimeError(f"hook refuses {event.id}")
