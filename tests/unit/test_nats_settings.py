"""The NATS engine's settings: what from_env accepts and refuses, with no server involved.

Each refusal names the variable and what is accepted, and never shows a
password or a token (the README's promise for every engine).
"""

from __future__ import annotations

import pytest

from minionize.config import EnvReader
from minionize.engines.jetstream import subject_matches
from minionize.engines.nats import NatsEngine
from minionize.errors import ConfigError

SECRET = "Zq-nats-secret"


def engine(**env: str) -> NatsEngine:
    return NatsEngine.from_env(EnvReader({"NATS_STREAM": "jobs", **env}))


def test_defaults() -> None:
    built = engine()
    assert (built.servers, built.subject, built.consumer, built.decoder) == (
        ["nats://localhost:4222"], "jobs", "minionize", "identity")
    assert (built.dead_letter_subject, built.dead_letter_stream) == ("jobs.dead", "jobs_dead")
    assert (built.ack_wait, built.lease_interval, built.nak_delay, built.max_attempts) == (60.0, 20.0, 0.0, 3)
    assert built.describe() == "nats stream jobs (consumer minionize, subject jobs) at nats://localhost:4222"


def test_a_cluster_url_and_every_setting() -> None:
    built = engine(
        NATS_URL=f"nats://u:{SECRET}@a:4222, tls://b:4223", NATS_SUBJECT="work.params", NATS_CONSUMER="fleet",
        NATS_DECODER="json", NATS_ACK_WAIT="90", NATS_NAK_DELAY="2.5", NATS_DEAD_LETTER_SUBJECT="work.failed",
        MINION_MAX_ATTEMPTS="5", NATS_OPERATION_TIMEOUT="3",
    )
    assert built.servers == [f"nats://u:{SECRET}@a:4222", "tls://b:4223"]
    assert built.where == "nats://u:***@a:4222,tls://b:4223"
    assert SECRET not in built.describe()
    assert (built.subject, built.consumer, built.dead_letter_subject) == ("work.params", "fleet", "work.failed")
    assert (built.ack_wait, built.nak_delay, built.max_attempts, built.operation_timeout) == (90.0, 2.5, 5, 3.0)


def test_a_token_in_the_url_is_masked() -> None:
    assert engine(NATS_URL=f"nats://{SECRET}@h:4222").where == "nats://***@h:4222"


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"NATS_STREAM": ""}, "NATS_STREAM", "mandatory"),
        ({"NATS_STREAM": "a.b"}, "NATS_STREAM", "expected a name"),
        ({"NATS_STREAM": "a b"}, "NATS_STREAM", "expected a name"),
        ({"NATS_CONSUMER": "c*"}, "NATS_CONSUMER", "expected a name"),
        ({"NATS_SUBJECT": "jobs.*"}, "NATS_SUBJECT", "without wildcards"),
        ({"NATS_SUBJECT": "jobs..x"}, "NATS_SUBJECT", "without wildcards"),
        ({"NATS_DEAD_LETTER_SUBJECT": "dead.>"}, "NATS_DEAD_LETTER_SUBJECT", "without wildcards"),
        ({"NATS_DEAD_LETTER_SUBJECT": "jobs"}, "NATS_DEAD_LETTER_SUBJECT", "other than NATS_SUBJECT"),
        ({"NATS_URL": "http://h:4222"}, "NATS_URL", "expected nats://"),
        ({"NATS_URL": f"nats://u:{SECRET}@h:port"}, "NATS_URL", "expected nats://"),
        ({"NATS_URL": "nats://"}, "NATS_URL", "expected nats://"),
        ({"NATS_ACK_WAIT": "0.5"}, "NATS_ACK_WAIT", ">= 1"),
        ({"NATS_OPERATION_TIMEOUT": "0"}, "NATS_OPERATION_TIMEOUT", "> 0"),
        ({"NATS_NAK_DELAY": "soon"}, "NATS_NAK_DELAY", "seconds"),
        ({"NATS_DECODER": "yaml"}, "NATS_DECODER", "json"),
        ({"NATS_PASSWORD": SECRET}, "NATS_USER", "needed with NATS_PASSWORD"),
        ({"NATS_USER": "u", "NATS_TOKEN": SECRET}, "NATS_TOKEN", "not both"),
        ({"NATS_TLS_KEY_FILE": "/k.pem"}, "NATS_TLS_CERT_FILE", "needed with NATS_TLS_KEY_FILE"),
    ],
)
def test_refusals_name_the_variable_and_hide_secrets(env: dict[str, str], variable: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        engine(**env)
    assert caught.value.variable == variable
    assert says in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_stream_is_mandatory() -> None:
    with pytest.raises(ConfigError) as caught:
        NatsEngine.from_env(EnvReader({}))
    assert caught.value.variable == "NATS_STREAM"


def test_unreadable_files_are_config_errors_before_any_connection(tmp_path: object) -> None:
    for env, variable in (
        ({"NATS_CREDS": "/nonexistent/user.creds"}, "NATS_CREDS"),
        ({"NATS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "NATS_TLS_CA_FILE"),
        ({"NATS_TLS_CERT_FILE": "/nonexistent/c.pem", "NATS_TLS_KEY_FILE": "/nonexistent/k.pem"},
         "NATS_TLS_CERT_FILE"),
    ):
        built = engine(**env)
        with pytest.raises(ConfigError) as caught:
            built.open()
        assert caught.value.variable == variable
        assert built._connection.loop is None  # no thread was started


@pytest.mark.parametrize(
    ("pattern", "subject", "captured"),
    [
        ("jobs", "jobs", True),
        ("jobs", "jobs.dead", False),
        ("jobs.*", "jobs.dead", True),
        ("jobs.*", "jobs.a.dead", False),
        ("jobs.>", "jobs.a.dead", True),
        ("jobs.>", "jobs", False),
        (">", "anything.at.all", True),
        ("*.dead", "jobs.dead", True),
    ],
)
def test_which_stream_subjects_capture_a_subject(pattern: str, subject: str, captured: bool) -> None:
    assert subject_matches(pattern, subject) is captured


def test_a_tls_connection_closed_as_it_opens_names_the_client_certificate() -> None:
    # TLS 1.3: a server that refuses the client's certificate may close the connection
    # before the client reads its alert; the client sees a broken pipe or a reset.
    from minionize.engines.natsconnect import Credentials

    closed = BrokenPipeError(32, "Broken pipe")
    without = Credentials(ca_file="/ca.pem").tls_refusal(closed, tls=True)
    assert without is not None and "wants a client certificate" in without and "NATS_TLS_CERT_FILE" in without
    refused = Credentials(ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem").tls_refusal(
        ConnectionResetError(104, "Connection reset by peer"), tls=True)
    assert refused is not None and "refused the client certificate NATS_TLS_CERT_FILE (/c.pem)" in refused
    assert Credentials().tls_refusal(closed, tls=False) is None  # a plain connection: just a closed pipe
