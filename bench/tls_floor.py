"""Section static's floor for new connections: the least a Python HTTPS server does per connection.

Run as a program, by the bench: ``python bench/tls_floor.py PORT CERT FILE``. It listens on
``127.0.0.1:PORT`` with TLS (uvloop's, the ``ssl`` module; ``CERT``, a certificate and its key:
devstack's own; ALPN ``http/1.1``; one session ticket, as devstack sends) and answers every
request with ``FILE``'s bytes, read once, in one write, closing the connection when the request
says ``Connection: close``. No routing, no file checks, no doorway for plain HTTP: what a
connection costs CPython, uvloop and OpenSSL, which any Python front door pays at least.
Standard library and uvloop only.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path


async def serve(port: int, cert: str, body: bytes) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert)
    context.set_alpn_protocols(["http/1.1"])
    context.num_tickets = 1
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n" % len(body))  # fmt: skip

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                closing = b"connection: close" in request.lower()
                writer.write(head + (b"Connection: close\r\n\r\n" if closing else b"\r\n") + body)
                await writer.drain()
                if closing:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port, ssl=context, backlog=1024)
    print(f"tls floor listening on https://127.0.0.1:{port}/", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    import uvloop

    port, cert, file = int(argv[1]), argv[2], argv[3]
    uvloop.run(serve(port, cert, Path(file).read_bytes()))


if __name__ == "__main__":
    main(sys.argv)
