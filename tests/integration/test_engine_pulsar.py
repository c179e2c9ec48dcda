"""What the Pulsar engine adds to the engine contract, checked against a real pulsar-lite broker.

pulsar-lite 0.2.0 numbers the consumers of every client connection from 0,
so two minion processes on one subscription collide in the broker; a real
Pulsar cluster has no such limit. Several consumers of one subscription are
therefore exercised as MINION_CONCURRENCY slots of one minion (one consumer
with several messages outstanding) and the crash case as a minion restarted
after a SIGKILL (the contract suite). pulsar-lite has no TLS listener
either: a TLS-terminating relay written here shows which handshakes the
client accepts, which is what the PULSAR_TLS_* settings change.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, cast

import pytest

from minionize import exitcodes
from minionize.config import EnvReader
from minionize.engines.pulsar import PulsarEngine
from tests.conftest import ROOT, minion_env, minionize_cmd, require, run_minion

from .backends import started
from .backends.pulsar import PulsarBackend, free_port

pytestmark = pytest.mark.integration
RECORD = (sys.executable, str(ROOT / "tests" / "programs" / "record.py"))


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest) -> PulsarBackend:
    """The session's pulsar backend, shared with the contract suites (backends.started)."""
    return cast(PulsarBackend, started("pulsar", request.config))


def minion(cwd: Path, env: dict[str, str], *program: str) -> subprocess.CompletedProcess[str]:
    """Run one minion to its end with `env` (and a clean environment otherwise)."""
    return subprocess.run(
        minionize_cmd(*program), cwd=cwd, env=minion_env(**env), capture_output=True, text=True, timeout=90
    )


def push(env: dict[str, str], *params: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "minionize.push", *params],
        env=minion_env(**env), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


class Relay:
    """A TCP relay to the broker that keeps what clients send, optionally terminating TLS."""

    def __init__(self, port: int, context: Optional[ssl.SSLContext] = None) -> None:
        self.target = ("127.0.0.1", port)
        self.context = context
        self.received = bytearray()
        self.handshakes: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        if self.context is not None:
            try:
                client = self.context.wrap_socket(client, server_side=True)
                self.handshakes.append("ok")
            except (ssl.SSLError, OSError) as exc:
                self.handshakes.append(str(exc))
                client.close()
                return
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
        self._pump(client, upstream, self.received)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, record: Optional[bytearray]) -> None:
        try:
            while chunk := source.recv(65536):
                if record is not None:
                    record.extend(chunk)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


# -- configuration and start-up ------------------------------------------------


def test_missing_topic_exits_2(tmp_path: Path) -> None:
    result = run_minion("true", cwd=tmp_path, MINION_ENGINE="pulsar")
    assert result.returncode == 2, result.stderr
    assert "PULSAR_TOPIC=(unset)" in result.stderr


def test_missing_tls_file_exits_2(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.pem")
    result = run_minion(
        "true", cwd=tmp_path, MINION_ENGINE="pulsar", PULSAR_TOPIC="t", PULSAR_TLS_TRUST_CERTS_FILE=missing
    )
    assert result.returncode == 2, result.stderr
    assert f"PULSAR_TLS_TRUST_CERTS_FILE='{missing}'" in result.stderr


def test_unreachable_broker_exits_3_within_the_operation_timeout(tmp_path: Path) -> None:
    """The client retries forever unless told otherwise: PULSAR_OPERATION_TIMEOUT (5s) bounds it."""
    url = f"pulsar://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_minion("true", cwd=tmp_path, MINION_ENGINE="pulsar", PULSAR_TOPIC="t", PULSAR_CONNECTION=url,
                        MINION_LOG_LEVEL="DEBUG")
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert elapsed < 15
    assert f"cannot use Pulsar topic t at {url}" in result.stderr
    # The C++ client's own lines go through Python logging, at DEBUG (the minion says an outage), never to stdout.
    assert "DEBUG pulsar client:" in result.stderr
    assert result.stdout == ""


def test_describe_masks_credentials() -> None:
    url = "pulsar://me:s3cret@127.0.0.1:6650"
    engine = PulsarEngine.from_env(EnvReader({"PULSAR_TOPIC": "t", "PULSAR_CONNECTION": url, "PULSAR_TOKEN": "tok"}))
    assert engine.describe() == "pulsar pulsar://me:***@127.0.0.1:6650 topic t subscription minionize (identity, token)"


# -- credentials ------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["PULSAR_TOKEN", "PULSAR_TOKEN_FILE"])
def test_token_reaches_the_broker_and_never_the_logs(broker: PulsarBackend, tmp_path: Path, variable: str) -> None:
    token = f"eyJhbGciOiJIUzI1NiJ9.minionize-{os.urandom(6).hex()}.sig"
    relay = Relay(broker.port)
    env = {**broker.env(tmp_path), "PULSAR_CONNECTION": f"pulsar://127.0.0.1:{relay.port}"}
    if variable == "PULSAR_TOKEN":
        env["PULSAR_TOKEN"] = token
    else:
        (tmp_path / "token").write_text(token + "\n")
        env["PULSAR_TOKEN_FILE"] = str(tmp_path / "token")
    try:
        pushed = push(env, "x")
        # DEBUG also turns the C++ client's INFO lines on: more places a token could leak.
        ran = minion(tmp_path, {**env, "MINION_IDLE_TIMEOUT": "2", "MINION_LOG_LEVEL": "DEBUG"},
                     *RECORD, str(tmp_path), "0", "0")
    finally:
        relay.close()
    assert ran.returncode == 0, ran.stderr
    assert list(tmp_path.glob("x.*.end"))
    # Length-prefixed in the CONNECT command: sent whole, without the file's newline.
    assert bytes([len(token)]) + token.encode() in relay.received
    assert "token)" in ran.stderr  # describe() says a token is used...
    for output in (pushed.stdout, pushed.stderr, ran.stdout, ran.stderr):
        assert token not in output  # ...and never which one


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Self-signed certificates: `broker` for 127.0.0.1, `elsewhere` for another name, `client`."""
    require(shutil.which("openssl") is not None, "openssl is needed to make test certificates")
    directory = tmp_path_factory.mktemp("certs")
    for name, subject, alt in [
        ("broker", "/CN=127.0.0.1", "IP:127.0.0.1"),
        ("elsewhere", "/CN=elsewhere.test", "DNS:elsewhere.test"),
        ("client", "/CN=minion", "DNS:minion"),
    ]:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem"),
             "-subj", subject, "-addext", f"subjectAltName={alt}"],
            check=True, capture_output=True,
        )
    return directory


_TRUSTED = {"PULSAR_TLS_TRUST_CERTS_FILE": "broker.pem"}
_CLIENT_CERT = {"PULSAR_TLS_CERT_FILE": "client.pem", "PULSAR_TLS_KEY_FILE": "client.key"}
#: case: (the relay's certificate, does the relay ask for the client's, settings, handshake accepted)
TLS_CASES = {
    "trusted certificate": ("broker", False, _TRUSTED, True),
    "unknown certificate": ("broker", False, {}, False),
    "insecure allowed": ("broker", False, {"PULSAR_TLS_ALLOW_INSECURE": "true"}, True),
    "other name, unchecked": ("elsewhere", False, {"PULSAR_TLS_TRUST_CERTS_FILE": "elsewhere.pem"}, True),
    "other name, checked": (
        "elsewhere",
        False,
        {"PULSAR_TLS_TRUST_CERTS_FILE": "elsewhere.pem", "PULSAR_TLS_VALIDATE_HOSTNAME": "true"},
        False,
    ),
    "client certificate given": ("broker", True, {**_TRUSTED, **_CLIENT_CERT}, True),
    "client certificate missing": ("broker", True, _TRUSTED, False),
}


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_tls_settings_decide_the_handshake(
    broker: PulsarBackend, certificates: Path, tmp_path: Path, case: str
) -> None:
    server_cert, client_cert_required, settings, accepted = TLS_CASES[case]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / f"{server_cert}.pem", certificates / f"{server_cert}.key")
    if client_cert_required:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certificates / "client.pem")
    relay = Relay(broker.port, context)
    env = {
        "MINION_ENGINE": "pulsar",
        "PULSAR_TOPIC": broker.unique("tls"),
        "PULSAR_CONNECTION": f"pulsar+ssl://127.0.0.1:{relay.port}",
        "PULSAR_OPERATION_TIMEOUT": "2",
        **{name: str(certificates / value) if name.endswith("FILE") else value for name, value in settings.items()},
    }
    try:
        result = minion(tmp_path, {**env, "MINION_IDLE_TIMEOUT": "1"}, "true")
    finally:
        relay.close()
    # pulsar-lite advertises no TLS address, so the lookup that follows fails either way.
    assert result.returncode == 3, result.stderr
    assert relay.handshakes, result.stderr
    assert (relay.handshakes[0] == "ok") is accepted, relay.handshakes


# -- delivery -----------------------------------------------------------------------


def test_pushing_onto_a_backlog_counts_no_attempt(broker: PulsarBackend, tmp_path: Path) -> None:
    """The second push subscribes while "a" waits: a consumer that took "a" would count a delivery."""
    env = broker.env(tmp_path)
    push(env, "a")
    push(env, "b")
    result = minion(tmp_path, {**env, "MINION_IDLE_TIMEOUT": "2"}, *RECORD, str(tmp_path), "0", "0")
    assert result.returncode == 0, result.stderr
    attempts = {p.name.split(".")[0]: p.read_text().split()[2] for p in tmp_path.glob("*.start")}
    assert attempts == {"a": "1", "b": "1"}


def test_redelivery_count_is_the_attempt_and_the_nack_delay_applies(broker: PulsarBackend, tmp_path: Path) -> None:
    env = {**broker.env(tmp_path), "PULSAR_NACK_DELAY": "2"}
    push(env, "a")
    # Records DIR/<param>.<attempt> with the time; succeeds at the third attempt.
    program = (
        "import os, sys, time\n"
        "attempt = os.environ['MINION_ATTEMPT']\n"
        "open(os.path.join(sys.argv[1], sys.argv[2] + '.' + attempt), 'w').write(repr(time.time()))\n"
        "sys.exit(0 if attempt == '3' else 1)\n"
    )
    result = minion(tmp_path, {**env, "MINION_MAX_ATTEMPTS": "5", "MINION_IDLE_TIMEOUT": "4"},
                    sys.executable, "-c", program, str(tmp_path))
    assert result.returncode == 0, result.stderr
    times = {p.name: float(p.read_text()) for p in tmp_path.glob("a.*")}
    assert sorted(times) == ["a.1", "a.2", "a.3"]
    assert times["a.2"] - times["a.1"] >= 1.8  # PULSAR_NACK_DELAY=2, not the default 1
    assert times["a.3"] - times["a.2"] >= 1.8


def test_one_minion_runs_two_messages_of_its_consumer_at_once(broker: PulsarBackend, tmp_path: Path) -> None:
    env = broker.env(tmp_path)
    push(env, "a", "b")
    result = minion(tmp_path, {**env, "MINION_CONCURRENCY": "2", "MINION_IDLE_TIMEOUT": "2"},
                    *RECORD, str(tmp_path), "1.5", "0")
    assert result.returncode == 0, result.stderr
    starts = [float(p.read_text().split()[0]) for p in tmp_path.glob("*.start")]
    ends = [float(p.read_text().split()[0]) for p in tmp_path.glob("*.end")]
    assert sorted(p.name.split(".")[0] for p in tmp_path.glob("*.end")) == ["a", "b"]
    assert max(starts) < min(ends)  # both ran together: two unacknowledged messages, one consumer


@pytest.mark.parametrize(
    ("subscription", "dead_letter_topic"), [("workers", None), (None, "custom-dlq")], ids=["default-name", "named"]
)
def test_dead_letter_topic_keeps_failed_messages_with_their_reason(
    broker: PulsarBackend, tmp_path: Path, subscription: Optional[str], dead_letter_topic: Optional[str]
) -> None:
    env = broker.env(tmp_path)
    topic = env["PULSAR_TOPIC"]
    if subscription:
        env["PULSAR_SUBSCRIPTION"] = subscription
    if dead_letter_topic:
        dead_letter_topic = env["PULSAR_DEAD_LETTER_TOPIC"] = broker.unique(dead_letter_topic)
    push(env, "doomed")
    publish_raw(broker, topic, subscription or "minionize", b"{not json")
    result = minion(tmp_path, {**env, "MINION_MAX_ATTEMPTS": "2", "MINION_IDLE_TIMEOUT": "3"},
                    *RECORD, str(tmp_path), "0", "1")
    assert result.returncode == exitcodes.SET_ASIDE, result.stderr
    assert len(list(tmp_path.glob("*.end"))) == 2  # doomed twice; the undecodable body never ran
    where = dead_letter_topic or f"{topic}-{subscription}-DLQ"
    letters = {body: properties for body, properties in broker.read(where, subscription or "minionize")}
    assert set(letters) == {b'"doomed"', b"{not json"}
    doomed = letters[b'"doomed"']
    assert "exit code 1" in doomed["minion_reason"] and "attempt 2 of 2" in doomed["minion_reason"]
    assert doomed["minion_attempts"] == "2"
    assert doomed["REAL_TOPIC"].endswith(topic) and doomed["ORIGIN_MESSAGE_ID"]
    assert "not valid JSON" in letters[b"{not json"]["minion_reason"]
    assert broker.read(topic, subscription or "minionize") == []  # the originals were acknowledged


def publish_raw(broker: PulsarBackend, topic: str, subscription: str, body: bytes) -> None:
    """Publish a body that minion-push would never write (it encodes every parameter)."""
    import pulsar

    client = pulsar.Client(broker.url, logger=pulsar.FileLogger(pulsar.LoggerLevel.Warn, os.devnull))
    try:
        # A receiver queue of 0: closing this consumer must not count an attempt of "doomed".
        client.subscribe(topic, subscription, consumer_type=pulsar.ConsumerType.Shared, receiver_queue_size=0).close()
        producer = client.create_producer(topic)
        producer.send(body)
        producer.close()
    finally:
        client.close()


# -- the broker goes away ------------------------------------------------------------


def test_a_minion_reconnects_after_a_broker_outage(broker: PulsarBackend, tmp_path: Path) -> None:
    env = broker.env(tmp_path)
    push(env, "before")
    minion = subprocess.Popen(
        minionize_cmd(*RECORD, str(tmp_path), "0", "0"), cwd=tmp_path,
        env=minion_env(**env, MINION_IDLE_TIMEOUT="10"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("before.*.end")):
            assert time.monotonic() < deadline and minion.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)  # let the grouped acknowledgement go out
        broker.restart(downtime=2.0)
        push(env, "after")
        _, err = minion.communicate(timeout=60)
    finally:
        if minion.poll() is None:
            minion.kill()
    assert minion.returncode == 0, err
    assert list(tmp_path.glob("after.*.end")), err
    assert "lost the connection to Pulsar" in err and "reconnected to Pulsar" in err


def test_the_client_never_aborts_the_process_at_exit(broker: PulsarBackend, tmp_path: Path) -> None:
    """With a Python logger, the C++ client aborts a few exits in a hundred (pulsar-client-python#256).

    The engine gives it a FileLogger on a pipe instead. A statistical guard:
    with a Python logger back, these 48 exits failed about one run in five.
    """
    for _ in range(6):
        batch = [
            subprocess.Popen(
                [sys.executable, "-m", "minionize.push", "p"],
                env=minion_env(**broker.env(tmp_path)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            for _ in range(8)
        ]
        for process in batch:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
