"""The google engine against the official Pub/Sub emulator (`gcloud beta emulators pubsub`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Optional

from tests.conftest import require

from ..api_backends import ApiBackend
from .base import Backend

HOST = "127.0.0.1:8085"
_READY_WITHIN = 60.0
#: The ack deadline of the queues of `lease_env` and `long_run`, in seconds.
SHORT_DEADLINE = 4


def emulator_ready(host: str = HOST) -> bool:
    """The emulator answers `Ok` to a plain HTTP GET on its port."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Emulator:
    """A Pub/Sub emulator started by the tests, in a process group of its own (gcloud runs java)."""

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.data_dir = ""

    def start(self) -> None:
        require(shutil.which("gcloud") is not None, "gcloud (with the Pub/Sub emulator) is not installed")
        self.data_dir = tempfile.mkdtemp(prefix="pubsub-emulator-")
        log = open(Path(self.data_dir) / "emulator.log", "ab")  # noqa: SIM115 - kept by the process
        self.process = subprocess.Popen(
            ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={self.host}",
             f"--data-dir={self.data_dir}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + _READY_WITHIN
        while not emulator_ready(self.host):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                require(False, f"the Pub/Sub emulator did not start on {self.host}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.process = None
        shutil.rmtree(self.data_dir, ignore_errors=True)
        while emulator_ready(self.host):  # the port is free again before anyone restarts it
            time.sleep(0.1)


def clients(host: str = HOST) -> tuple[Any, Any]:
    """A subscriber and a publisher talking to the emulator, whatever the environment says."""
    import grpc
    from google.pubsub_v1 import PublisherClient, SubscriberClient
    from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    subscriber = SubscriberClient(transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(host)))
    publisher = PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host)))
    return subscriber, publisher


def pull_all(subscription: str, host: str = HOST) -> list[Any]:
    """Every message waiting in `subscription` (acked), with its attributes."""
    subscriber, _ = clients(host)
    messages: list[Any] = []
    empty_pulls = 0
    while empty_pulls < 3:  # return_immediately may answer empty once while some are there
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # return_immediately, as the engine uses it
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 100, "return_immediately": True}, timeout=10
            )
        if not response.received_messages:
            empty_pulls += 1
            time.sleep(0.2)
            continue
        messages += [received.message for received in response.received_messages]
        subscriber.acknowledge(
            subscription=subscription, ack_ids=[received.ack_id for received in response.received_messages]
        )
    subscriber.transport.close()
    return messages


class GoogleBackend(Backend):
    name = "google"
    #: Pub/Sub never knows that a topic is drained: MINION_IDLE_TIMEOUT ends the minions.
    drains = False
    #: The ack deadline, extended while a run lasts.
    has_deadline = True
    #: The emulator keeps nothing across a restart (topics, subscriptions, messages):
    #: a restart loses everything, so the restart promise cannot be checked with it.
    restartable = False
    server_name = "Pub/Sub"
    bad_urls = (("PUBSUB_EMULATOR_HOST", "u:{secret}@127.0.0.1:{port}"),)

    def __init__(self) -> None:
        self.emulator: Optional[Emulator] = None

    @classmethod
    def pointed_at(cls, address: str, secret: str) -> tuple[dict[str, str], str]:
        """The emulator takes no password: the address alone."""
        env = {"MINION_ENGINE": "google", "GOOGLE_PROJECT_ID": "p", "GOOGLE_TOPIC_ID": "topic",
               "GOOGLE_SUBSCRIPTION": "sub", "PUBSUB_EMULATOR_HOST": address}
        return env, address

    def start(self) -> None:
        if not emulator_ready():
            self.emulator = Emulator()
            self.emulator.start()

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()

    def env(self, workdir: Path) -> dict[str, str]:
        return {
            "MINION_ENGINE": "google",
            "PUBSUB_EMULATOR_HOST": HOST,
            "GOOGLE_PROJECT_ID": self.unique("project"),
            "GOOGLE_TOPIC_ID": self.unique("topic"),
            "GOOGLE_SUBSCRIPTION": self.unique("sub"),
            "GOOGLE_DECODER": "json",
        }

    def publish_raw(self, env: dict[str, str], bodies: list[bytes]) -> None:
        subscriber, publisher = clients()
        topic = f"projects/{env['GOOGLE_PROJECT_ID']}/topics/{env['GOOGLE_TOPIC_ID']}"
        try:
            publisher.publish(topic=topic, messages=[{"data": body} for body in bodies], timeout=30)
        finally:
            subscriber.transport.close()
            publisher.transport.close()

    def raw_dead_letters(self, env: dict[str, str]) -> list[tuple[bytes, str]]:
        project, topic = env["GOOGLE_PROJECT_ID"], env["GOOGLE_TOPIC_ID"]
        letters = pull_all(f"projects/{project}/subscriptions/{topic}-dead-letter-sub")
        return [(letter.data, letter.attributes.get("minion_reason", "")) for letter in letters]

    def lease_env(self) -> dict[str, str]:
        # A killed minion's message comes back after one ack deadline; the next
        # minion must not give up waiting before that.
        return {**self.short_deadline_queue(), "MINION_IDLE_TIMEOUT": f"{SHORT_DEADLINE * 2}"}

    def long_run(self) -> tuple[float, dict[str, str]]:
        # A run of almost two deadlines, renewed every third of one. The second
        # minion must still be pulling when the run ends (the suite's 4 s idle
        # timeout would end it before), or a lost lease would go unnoticed.
        seconds = SHORT_DEADLINE + 3.0
        return seconds, {**self.short_deadline_queue(), "MINION_IDLE_TIMEOUT": f"{seconds + 1:g}"}

    def short_deadline_queue(self) -> dict[str, str]:
        """The names of a fresh topic and subscription whose ack deadline is SHORT_DEADLINE seconds.

        Pub/Sub refuses a deadline under 10 s (so does GOOGLE_ACK_DEADLINE), the
        emulator keeps one, and a minion renews at a third of the deadline of the
        subscription it finds. Made as a minion makes it (a dead-letter topic
        with its keeper, and a policy), with Pub/Sub's largest max_delivery_attempts
        so that the minions' MINION_MAX_ATTEMPTS decides when a parameter is set aside.
        """
        project, topic, subscription = self.unique("project"), self.unique("topic"), self.unique("sub")
        topic_path = f"projects/{project}/topics/{topic}"
        dead = f"{topic_path}-dead-letter"
        subscriber, publisher = clients()
        try:
            publisher.create_topic(name=topic_path)
            publisher.create_topic(name=dead)
            subscriber.create_subscription(name=f"projects/{project}/subscriptions/{topic}-dead-letter-sub", topic=dead)
            subscriber.create_subscription(request={
                "name": f"projects/{project}/subscriptions/{subscription}",
                "topic": topic_path,
                "ack_deadline_seconds": SHORT_DEADLINE,
                "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 100},
            })
        finally:
            subscriber.transport.close()
            publisher.transport.close()
        return {"GOOGLE_PROJECT_ID": project, "GOOGLE_TOPIC_ID": topic, "GOOGLE_SUBSCRIPTION": subscription}


BACKENDS = (GoogleBackend,)


class GoogleApi(ApiBackend):
    engine = "google"
    process = "google"
    #: Pub/Sub has no cheap count of a subscription's messages.
    knows_remaining = False
    #: The ack deadline is 10 s at the least: the process suite's long-run test holds one past it.
    hold_seconds = 0.0

    def address_env(self, host: str, port: int) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": f"{host}:{port}"}


API_BACKENDS = (GoogleApi,)
