"""Running services: the run lock, port assignment, spawning and starting, process groups, the
guardian, readiness, the restart policy, the supervisor's events and state machine, and their
output.

Readers outside (the proxy, the app) see services only through :mod:`devstack.status`.
"""
