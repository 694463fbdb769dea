"""What the kernel says about the machine's sockets: which ports listen now, who holds a port, is
a port free. Used both by the supervision side (ports, readiness) and by the proxy (naming who
holds its port); imports nothing else of devstack.
"""
