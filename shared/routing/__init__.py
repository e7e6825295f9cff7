"""The cross-region router: ``plan`` (which regions an envelope still has to reach, pure) and ``router`` (forwarding)."""
