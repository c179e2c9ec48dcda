"""Every way the nats engine authenticates, against a private nats-server that asks for it.

For each (a user and password, a token, TLS with a CA of the test's own,
mutual TLS, a credentials file in operator mode): the engine's verbs work
(open, push, next, ack), and one real minion runs parameters to the end;
neither describe(), nor the minion's log (at DEBUG), nor its program's
environment shows the secret. A server the settings cannot satisfy (a
certificate of another CA, no client certificate, a user of an account
the operator does not know) ends a minion with one line that names the
variable to look at.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nkeys
import pytest

from minionize.config import EnvReader
from minionize.engines.nats import NatsEngine
from minionize.errors import ConfigError
from tests.conftest import require, run_minion

from .backends.base import take
from .backends.nats import NATS_SERVER, NatsServer
from .natsjwt import Operator, keypair
from .tls import Authority, authority

pytestmark = pytest.mark.integration
PASSWORD = "Zq-nats-password-7f3"
TOKEN = "Zq-nats-token-91c"
#: The program a minion runs: it writes its environment to DIR/<param>.json.
DUMP_ENV = (sys.executable, "-c",
            "import json, os, sys; open(os.path.join(sys.argv[1], sys.argv[2] + '.json'), 'w')"
            ".write(json.dumps(dict(os.environ)))")


@dataclass
class Secured:
    """A nats-server that asks for credentials, the variables that satisfy it, and what must never show."""

    server: NatsServer
    env: dict[str, str]
    secrets: list[str] = field(default_factory=list)


@pytest.fixture(scope="module", autouse=True)
def nats_server_installed() -> None:
    require(Path(NATS_SERVER).exists(), "nats-server is not installed (scripts/services.sh)")


def started(config: str) -> NatsServer:
    server = NatsServer(config=config)
    server.start()
    return server


def engine(env: dict[str, str], **more: str) -> NatsEngine:
    return NatsEngine.from_env(EnvReader({**env, **more}))


def stream(name: str) -> dict[str, str]:
    """A stream of its own on a server that several tests share."""
    return {"NATS_STREAM": f"{name}-{uuid.uuid4().hex[:10]}"}


def api_round(secured: Secured) -> None:
    """open, push, next, ack on the server; describe() shows no secret."""
    env = {**secured.env, **stream("api")}
    pusher = engine(env)
    pusher.push(["first"])
    pusher.close()
    minion = engine(env)
    minion.open()
    try:
        message = take(minion, 20)
        assert message.param == "first"
        minion.ack(message)
        assert minion.drained()
        described = minion.describe()
    finally:
        minion.close()
    for secret in secured.secrets:
        assert secret not in described


def minion_round(secured: Secured, tmp_path: Path) -> None:
    """A real minion runs two parameters to the end; its log and its program never see a secret."""
    env = {**secured.env, **stream("minion"), "NATS_OPERATION_TIMEOUT": "5"}
    pusher = engine(env)
    pusher.push(["one", "two"])
    pusher.close()
    out = tmp_path / "runs"
    out.mkdir()
    ran = run_minion(*DUMP_ENV, str(out), cwd=tmp_path, timeout=90, MINION_ENGINE="nats",
                     MINION_LOG_LEVEL="DEBUG", **env)
    assert ran.returncode == 0, ran.stderr
    assert " WARNING " not in ran.stderr, ran.stderr  # nothing a user would have to look into (a TLS close)
    assert sorted(path.stem for path in out.glob("*.json")) == ["one", "two"]
    program_env = [json.loads(path.read_text()) for path in out.glob("*.json")]
    for secret in secured.secrets:
        assert secret not in ran.stdout + ran.stderr
        for seen in program_env:
            assert secret not in json.dumps(seen)


def failed_start(env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    """A minion that cannot start: its exit code and its one line."""
    tmp_path.mkdir(exist_ok=True)
    ran = run_minion("true", cwd=tmp_path, timeout=60, MINION_ENGINE="nats", NATS_OPERATION_TIMEOUT="3",
                     **stream("refused"), **env)
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    return ran.returncode, lines[0]


# -- a user and password, a token --------------------------------------------


@pytest.fixture(scope="module", params=["user and password", "token"])
def secret_server(request: pytest.FixtureRequest) -> Iterator[Secured]:
    if request.param == "token":
        config, env = f'authorization {{ token: "{TOKEN}" }}\n', {"NATS_TOKEN": TOKEN}
    else:
        config = f'authorization {{ user: minion, password: "{PASSWORD}" }}\n'
        env = {"NATS_USER": "minion", "NATS_PASSWORD": PASSWORD}
    server = started(config)
    yield Secured(server, {"NATS_URL": server.url, **env}, [PASSWORD, TOKEN])
    server.remove()


def test_a_secret_server_serves_the_engine(secret_server: Secured) -> None:
    api_round(secret_server)


def test_a_secret_server_serves_a_minion_that_never_shows_the_secret(secret_server: Secured, tmp_path: Path) -> None:
    minion_round(secret_server, tmp_path)


def test_credentials_in_the_url_serve_the_engine_and_are_masked(secret_server: Secured) -> None:
    userinfo = f"minion:{PASSWORD}" if "NATS_USER" in secret_server.env else TOKEN
    env = {"NATS_URL": f"nats://{userinfo}@127.0.0.1:{secret_server.server.port}"}
    api_round(Secured(secret_server.server, env, [PASSWORD, TOKEN]))


# -- TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Authority]:
    directory = tmp_path_factory.mktemp("nats-tls")
    return {"ours": authority(directory, "ca"), "other": authority(directory, "other")}


def tls_config(ca: Authority, verify_clients: bool) -> str:
    clients = f'  ca_file: "{ca.ca}"\n  verify: true\n' if verify_clients else ""
    return f'tls {{\n  cert_file: "{ca.server.cert}"\n  key_file: "{ca.server.key}"\n{clients}}}\n'


@pytest.fixture(scope="module")
def tls_server(certificates: dict[str, Authority]) -> Iterator[Secured]:
    ours = certificates["ours"]
    server = started(tls_config(ours, verify_clients=False))
    yield Secured(server, {"NATS_URL": server.tls_url, "NATS_TLS_CA_FILE": str(ours.ca)})
    server.remove()


@pytest.fixture(scope="module")
def mutual_tls_server(certificates: dict[str, Authority]) -> Iterator[Secured]:
    ours = certificates["ours"]
    server = started(tls_config(ours, verify_clients=True))
    env = {"NATS_URL": server.tls_url, "NATS_TLS_CA_FILE": str(ours.ca),
           "NATS_TLS_CERT_FILE": str(ours.client.cert), "NATS_TLS_KEY_FILE": str(ours.client.key)}
    yield Secured(server, env, [ours.client.key.read_text().strip().splitlines()[1]])
    server.remove()


def test_tls_with_the_servers_ca_serves_the_engine_and_a_minion(tls_server: Secured, tmp_path: Path) -> None:
    api_round(tls_server)
    minion_round(tls_server, tmp_path)


def test_a_server_certificate_of_another_ca_exits_3_naming_nats_tls_ca_file(
    tls_server: Secured, certificates: dict[str, Authority], tmp_path: Path
) -> None:
    other = certificates["other"]
    code, line = failed_start({**tls_server.env, "NATS_TLS_CA_FILE": str(other.ca)}, tmp_path)
    assert code == 3, line
    assert line.startswith("minionize: ") and "NATS_TLS_CA_FILE" in line and str(other.ca) in line, line
    assert "not verified" in line, line


def test_mutual_tls_serves_the_engine_and_a_minion(mutual_tls_server: Secured, tmp_path: Path) -> None:
    api_round(mutual_tls_server)
    minion_round(mutual_tls_server, tmp_path)


def test_mutual_tls_without_a_client_certificate_exits_3_naming_it(
    mutual_tls_server: Secured, certificates: dict[str, Authority], tmp_path: Path
) -> None:
    other = certificates["other"]
    without = {k: v for k, v in mutual_tls_server.env.items() if k not in ("NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE")}
    code, line = failed_start(without, tmp_path / "none")
    assert code == 3 and "wants a client certificate" in line and "NATS_TLS_CERT_FILE" in line, line
    foreign = {**without, "NATS_TLS_CERT_FILE": str(other.client.cert), "NATS_TLS_KEY_FILE": str(other.client.key)}
    code, line = failed_start(foreign, tmp_path / "foreign")
    assert code == 3 and "refused the client certificate" in line and str(other.client.cert) in line, line


# -- a credentials file, in operator mode -------------------------------------------


@pytest.fixture(scope="module")
def operator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Secured, Operator]]:
    operator = Operator()
    server = started(operator.server_config())
    creds = tmp_path_factory.mktemp("nats-creds") / "minion.creds"
    seed = operator.user_creds(creds)
    yield Secured(server, {"NATS_URL": server.url, "NATS_CREDS": str(creds)}, [seed]), operator
    server.remove()


def test_a_credentials_file_serves_the_engine_and_a_minion(
    operator_server: tuple[Secured, Operator], tmp_path: Path
) -> None:
    secured, _ = operator_server
    api_round(secured)
    minion_round(secured, tmp_path)


def test_a_user_of_an_unknown_account_is_refused_naming_nats_creds(
    operator_server: tuple[Secured, Operator], tmp_path: Path
) -> None:
    secured, operator = operator_server
    stranger, _ = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    creds = tmp_path / "stranger.creds"
    seed = operator.user_creds(creds, signer=stranger)
    env = {**secured.env, "NATS_CREDS": str(creds)}
    with pytest.raises(ConfigError) as caught:
        engine(env, **stream("x")).open()
    assert caught.value.variable == "NATS_CREDS" and "refused" in str(caught.value)
    code, line = failed_start(env, tmp_path)
    assert code == 2 and "NATS_CREDS" in line and seed not in line, line
