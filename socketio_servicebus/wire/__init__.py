"""The wire format: versioned JSON envelopes, packed into one Service Bus message per batch.

``codec`` holds the JSON rules (depth, binary attachments), ``envelope`` the envelope, the batch
and the application properties that subscription rules filter on. Pure: no I/O.
"""
