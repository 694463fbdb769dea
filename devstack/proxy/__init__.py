"""The HTTPS front door: binding, the server and its two lanes, routing, the upstream pool,
websockets, static files and error pages.

It reads services only through :mod:`devstack.status` and knows nothing of how they run.
"""
