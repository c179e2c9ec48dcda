"""A test network: minions on one host, the broker on another, a link between them that the test breaks.

Two network namespaces that the test makes (`mnz-<pid>-<n>-m` for the
minions, `-b` for the broker) joined by a veth pair, 192.0.2.1/30 on the
minion side and 192.0.2.2/30 on the broker side (TEST-NET-1: a
documentation range, and it never leaves these namespaces). The brokers
keep running on the machine's loopback; a `Relay` listens inside the broker
namespace on 192.0.2.2, with the broker's own port, and forwards each
connection to 127.0.0.1 in the root namespace. `expose` rewrites a minion's
variables to that address, and `command` runs a program in the minion
namespace, so every byte between a minion and its broker crosses the link.

The faults, each removed by `clear` (and with the namespaces by `remove`):

- `cut`: iptables DROP of everything arriving from the link, on both sides.
  Nothing is refused or reset: connections stay half-open, as across a
  switch that died or a NAT that forgot them.
- `loss`: the same rule with `-m statistic`, a share of the packets only.
- `delay`: latency and jitter on what the minions send. This machine's
  kernel has no netem (CONFIG_NET_SCH_NETEM is off), so the relay holds
  every chunk it reads from a minion for the delay, in order, before it
  forwards it: the minion's requests reach the broker that much later.

A Pulsar broker checks its clients (a ping every 30 s) and ends the
connection of one that does not answer; pulsar-lite 0.2.0 sends no ping,
and refuses a new consumer numbered as one it still holds (every client
numbers from 0), where a Pulsar broker takes any number of consumers on a
Shared subscription. So a Pulsar relay checks the minion's side of each
connection with TCP keep-alive (PULSAR_CHECK: idle 2 s, then 3 probes 1 s
apart) and TCP_USER_TIMEOUT (5 s, for what it sent and the minion did not
acknowledge: keep-alive only probes an idle connection), and ends, cleanly,
one that a cut killed: within 5 s of the cut the broker sees that client
go, and a minion that connects anew is taken.

setns(2) changes the namespace of the calling thread only: `inside` enters
one for the sockets made in its block (they stay in it) and then goes back.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import itertools
import os
import queue
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from tests.conftest import require
from tests.integration.backends.relay import _Frames

IP = shutil.which("ip") or "/usr/sbin/ip"
IPTABLES = shutil.which("iptables") or "/usr/sbin/iptables"
MINION_ADDRESS, BROKER_ADDRESS = "192.0.2.1", "192.0.2.2"
#: The veth end's name in each namespace.
LINK = "mnzlink"
_CLONE_NEWNET = 0x40000000
_COUNT = itertools.count()
_LOOPBACK = re.compile(r"(?:127\.0\.0\.1|localhost):(\d+)")
#: TCP keep-alive on a Pulsar relay's side of a minion's connection, for the ping that pulsar-lite does not
#: send: seconds idle, seconds between probes, unanswered probes.
PULSAR_CHECK = (2, 1, 3)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """The calling thread in network namespace `namespace` for the block, then back in its own."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


class Relay:
    """Listens in the broker namespace on BROKER_ADDRESS:`port`, forwards to 127.0.0.1:`port` of the machine.

    `pulsar`: the broker's lookup answers name `pulsar://127.0.0.1:<port>`,
    which a minion in its own namespace could not reach: they are rewritten
    to the relay's address, of the same length, in whole frames; and the
    minion's side of each connection is checked by TCP keep-alive (PULSAR_CHECK).
    """

    def __init__(self, namespace: str, port: int, pulsar: bool = False) -> None:
        self.port, self.pulsar = port, pulsar
        with inside(namespace):
            self._listener = socket.create_server((BROKER_ADDRESS, port))
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        #: (mean, jitter) in seconds, applied to what the minions send.
        self.delay = (0.0, 0.0)
        threading.Thread(target=self._accept, name=f"net-relay-{port}", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.drop()

    def drop(self) -> None:
        """End every connection (the broker sees its clients go), and keep listening."""
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                broker = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                client.close()  # the broker is down: the minion sees its connection end
                continue
            broker.settimeout(None)
            for sock in (client, broker):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.pulsar:
                idle, interval, probes = PULSAR_CHECK
                client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, (idle + interval * probes) * 1000)
            with self._lock:
                self._sockets |= {client, broker}
            threading.Thread(target=self._upstream, args=(client, broker), daemon=True).start()
            threading.Thread(target=self._downstream, args=(client, broker), daemon=True).start()

    def _upstream(self, client: socket.socket, broker: socket.socket) -> None:
        """Minion to broker, each chunk held for the delay of the moment (in order)."""
        line: queue.Queue[tuple[float, bytes]] = queue.Queue()
        sender = threading.Thread(target=self._send_due, args=(line, broker), daemon=True)
        sender.start()
        due = 0.0
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            mean, jitter = self.delay
            due = max(due, time.monotonic() + max(0.0, random.uniform(mean - jitter, mean + jitter)))
            line.put((due, data))
            if not data:
                break
        sender.join()

    def _send_due(self, line: queue.Queue[tuple[float, bytes]], broker: socket.socket) -> None:
        while True:
            due, data = line.get()
            time.sleep(max(0.0, due - time.monotonic()))
            if not data:
                break
            try:
                broker.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            broker.shutdown(socket.SHUT_WR)

    def _downstream(self, client: socket.socket, broker: socket.socket) -> None:
        """Broker to minion; when the broker ends the connection, the minion's ends too."""
        frames = _Frames(broker) if self.pulsar else None
        ours = f"pulsar://127.0.0.1:{self.port}".encode(), f"pulsar://{BROKER_ADDRESS}:{self.port}".encode()
        while True:
            if frames is not None:
                data = (frames.next() or b"").replace(*ours)
            else:
                try:
                    data = broker.recv(65536)
                except OSError:
                    data = b""
            if not data:
                break
            try:
                client.sendall(data)
            except OSError:
                break
        for sock in (client, broker):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._sockets -= {client, broker}
        client.close()
        broker.close()


class Network:
    """The two namespaces, the link, the relays and the faults of one test."""

    def __init__(self) -> None:
        base = f"mnz-{os.getpid()}-{next(_COUNT)}"
        self.minions, self.brokers = f"{base}-m", f"{base}-b"
        self.relays: dict[int, Relay] = {}
        self._rules: list[tuple[str, list[str]]] = []

    def create(self) -> Network:
        run(IP, "netns", "add", self.minions)
        run(IP, "netns", "add", self.brokers)
        run(IP, "link", "add", LINK, "netns", self.minions, "type", "veth", "peer", "name", LINK,
            "netns", self.brokers)
        for namespace, address in ((self.minions, MINION_ADDRESS), (self.brokers, BROKER_ADDRESS)):
            run(IP, "-n", namespace, "address", "add", f"{address}/30", "dev", LINK)
            run(IP, "-n", namespace, "link", "set", "lo", "up")
            run(IP, "-n", namespace, "link", "set", LINK, "up")
        return self

    def remove(self) -> None:
        """Delete the namespaces (the veth pair and every rule go with them) and close the relays."""
        for relay in self.relays.values():
            relay.close()
        for namespace in (self.minions, self.brokers):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                run(IP, "netns", "delete", namespace)

    # -- reaching the brokers ----------------------------------------------------

    def expose(self, env: dict[str, str]) -> dict[str, str]:
        """`env` with every 127.0.0.1:PORT replaced by the relay of that port (made at the first use)."""

        def relayed(match: re.Match[str]) -> str:
            port = int(match.group(1))
            if port not in self.relays:
                pulsar = env.get("MINION_ENGINE") == "pulsar"
                self.relays[port] = Relay(self.brokers, port, pulsar=pulsar)
            return f"{BROKER_ADDRESS}:{port}"

        return {name: _LOOPBACK.sub(relayed, value) for name, value in env.items()}

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run in the minions' namespace (`ip netns exec` execs it: the pid is the program's)."""
        return [IP, "netns", "exec", self.minions, *argv]

    def get(self, port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """(status, body) of an HTTP GET of 127.0.0.1:`port` in the minions' namespace; (0, why) if none."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            with inside(self.minions):
                conn.connect()  # the socket is made here, in the namespace
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        except OSError as exc:
            return 0, repr(exc)
        finally:
            conn.close()

    # -- faults ---------------------------------------------------------------------

    def _rule(self, namespace: str, rule: list[str]) -> None:
        run(IP, "netns", "exec", namespace, IPTABLES, "-I", "INPUT", *rule)
        self._rules.append((namespace, rule))

    def cut(self) -> None:
        """Drop everything on the link, both ways: no reset, no error, connections stay half-open."""
        for namespace in (self.minions, self.brokers):
            self._rule(namespace, ["-i", LINK, "-j", "DROP"])

    def loss(self, share: float) -> None:
        """Drop `share` of the packets on the link, each way."""
        for namespace in (self.minions, self.brokers):
            self._rule(namespace, ["-i", LINK, "-m", "statistic", "--mode", "random",
                                   "--probability", f"{share:g}", "-j", "DROP"])

    def delay(self, mean: float, jitter: float = 0.0) -> None:
        """Hold what the minions send for `mean` ± `jitter` seconds (uniform), in order."""
        for relay in self.relays.values():
            relay.delay = (mean, jitter)

    def clear(self) -> None:
        """Remove every fault: the link works again."""
        for relay in self.relays.values():
            relay.delay = (0.0, 0.0)
        while self._rules:
            namespace, rule = self._rules.pop()
            run(IP, "netns", "exec", namespace, IPTABLES, "-D", "INPUT", *rule)


def remove_stale() -> None:
    """Delete the namespaces of test runs that were killed before their teardown (their pid is gone)."""
    listed = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    for name in re.findall(r"^(mnz-(\d+)-\d+-[mb])\b", listed, re.MULTILINE):
        if not Path(f"/proc/{name[1]}").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                run(IP, "netns", "delete", name[0])


def can_make_namespaces() -> Optional[str]:
    """None when this machine lets the tests make namespaces and iptables rules; otherwise why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for program in (IP, IPTABLES):
        if not Path(program).exists():
            return f"{program} is not installed (iproute2, iptables)"
    return None


@contextlib.contextmanager
def network() -> Iterator[Network]:
    """A fresh test network, removed at the end whatever happened (required: a failure under CI=true)."""
    why = can_make_namespaces()
    require(why is None, f"no test network: {why}")
    remove_stale()
    net = Network()
    try:
        try:
            net.create()
        except (RuntimeError, OSError) as exc:
            require(False, f"no test network: {exc}")
        yield net
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            net.clear()
        net.remove()
