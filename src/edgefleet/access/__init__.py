"""Who may do what: operator API keys with roles, enrollment tokens, device credentials,
and the append-only audit log of operator writes.

``tokens`` is pure (formats, hashing, role order); ``service`` does the I/O.
"""
