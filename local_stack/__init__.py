"""The whole system on one machine: emulator (two regions), Azurite, Functions, relay nodes.

``python -m local_stack`` (what ``make run`` starts) and the end-to-end tests both use
:class:`local_stack.stack.LocalStack`.
"""
