"""The control socket of a running stack and its clients.

``devstack up`` answers on ``.devstack/control.sock`` (a unix socket, owner-only; never a TCP
port): one newline-terminated JSON request per connection, one JSON answer back.

    protocol.py   the requests, the answers and the versioned ``status`` document: pure
    address.py    where the socket lives, and binding or connecting to a path of any length
    server.py     the stack's side: answers requests by asking the supervisor (wired by app.py)
    client.py     the CLI's side: finds the live stack, cleans up after a crashed one, asks
    render.py     the human forms: the status table, log tails
    detach.py     `up -d`: the stack started in the background, waits for it, `run`'s exit status
"""
