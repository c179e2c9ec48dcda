"""A TCP relay between Pulsar clients and pulsar-lite that ends every connection cleanly.

pulsar-lite 0.2.0 leaks the consumer of a connection whose read fails: the
`?` after its frame read returns from the connection task before its cleanup
(rust/src/broker/service/server_cnx.rs), so the messages pushed to that
consumer stay stuck until the broker restarts, and every later client that
numbers its consumer the same (they all start at 0) is refused. A SIGKILLed
client makes that read fail: with a reset when unread bytes were waiting in
its socket, or with EPIPE when the broker wrote to it after its FIN and got
a reset back. A real Pulsar broker drops a consumer however its connection
ends; to test minionize against that promise rather than against the bug,
the pulsar backend puts this relay between the minions and the broker:

- it forwards whole frames of Pulsar's binary protocol (`[total size][...]`)
  both ways, and drops an incomplete frame left by a dying client;
- when the client side ends, reset or not, it sends the broker a FIN and
  keeps reading until the broker closes, so the broker's read sees a clean
  end of stream (its "client closed connection" path, whose cleanup
  redelivers the consumer's unacked messages) and never an error;
- the broker's lookup answers name the broker itself
  (`pulsar://127.0.0.1:<broker port>`), which would send the client around
  the relay: in frames without a payload, that URL is rewritten to the
  relay's, of the same length (both ports have as many digits).

It holds no state of Pulsar's and never answers for the broker: every
command reaches the real broker, and every answer comes from it.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress
from typing import Optional


def _listener_like(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 whose port has as many digits as `port`."""
    for _ in range(100):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        if len(str(listener.getsockname()[1])) == len(str(port)):
            listener.listen(64)
            return listener
        listener.close()
    raise RuntimeError(f"no free port with {len(str(port))} digits")


class _Frames:
    """Reads whole frames (4-byte big-endian size, then that many bytes) from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> Optional[bytes]:
        """The next whole frame, or None when the peer ended (cleanly or not): a partial frame is dropped."""
        while True:
            if len(self.buffer) >= 4:
                size = 4 + struct.unpack(">I", self.buffer[:4])[0]
                if len(self.buffer) >= size:
                    frame, self.buffer = self.buffer[:size], self.buffer[size:]
                    return frame
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buffer += chunk


class Relay:
    """Listens on 127.0.0.1, relays each connection to the broker on `broker_port`."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self._listener = _listener_like(broker_port)
        self.port: int = self._listener.getsockname()[1]
        self._broker_url = f"pulsar://127.0.0.1:{broker_port}".encode()
        self._own_url = f"pulsar://127.0.0.1:{self.port}".encode()
        assert len(self._broker_url) == len(self._own_url)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="pulsar-relay", daemon=True).start()

    @property
    def url(self) -> str:
        return self._own_url.decode()

    def close(self) -> None:
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                broker = socket.create_connection(("127.0.0.1", self.broker_port), timeout=5)
            except OSError:  # the broker is down (a restart): the client retries
                client.close()
                continue
            broker.settimeout(None)
            for sock in (client, broker):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {client, broker}
            upstream = threading.Thread(target=self._upstream, args=(client, broker), daemon=True)
            upstream.start()
            threading.Thread(target=self._downstream, args=(client, broker, upstream), daemon=True).start()

    def _upstream(self, client: socket.socket, broker: socket.socket) -> None:
        """Client to broker, whole frames; when the client ends, a FIN to the broker."""
        frames = _Frames(client)
        while (frame := frames.next()) is not None:
            try:
                broker.sendall(frame)
            except OSError:
                break
        with suppress(OSError):
            broker.shutdown(socket.SHUT_WR)

    def _downstream(self, client: socket.socket, broker: socket.socket, upstream: threading.Thread) -> None:
        """Broker to client, lookup URLs rewritten; read until the broker closes, then close both."""
        frames = _Frames(broker)
        client_gone = False
        while (frame := frames.next()) is not None:
            if client_gone:
                continue  # drained, so that closing never resets the broker's connection
            command_size = struct.unpack(">I", frame[4:8])[0]
            if 8 + command_size == len(frame):  # a command without payload: a lookup answer may name the broker
                frame = frame.replace(self._broker_url, self._own_url)
            try:
                client.sendall(frame)
            except OSError:
                client_gone = True
        # The broker ended: the client sees its connection end too.
        with suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
        upstream.join()
        with self._lock:
            self._sockets -= {client, broker}
        client.close()
        broker.close()
