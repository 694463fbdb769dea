"""devstack: run a multi-service web stack locally the way production runs it."""

__version__ = "0.1.0"
