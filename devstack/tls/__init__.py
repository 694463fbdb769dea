"""Local TLS: the CA, leaf certificates, owner-only key files and the trust stores. Knows nothing
of routing or services: callers pass host names in.
"""
