"""Settings: types, defaults, `.env` and `.minionize.yml` precedence, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minionize import config, registry
from minionize.errors import ConfigError, MissingExtra
from tests.conftest import ROOT


def test_defaults_match_the_original_readme() -> None:
    settings = config.Settings.from_env({})
    assert settings.engine == "execo"
    assert settings.reporter == "null"
    assert settings.concurrency == 1
    assert settings.max_attempts == 3


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("MINION_CONCURRENCY", "abc", "whole number from 1 to 1024"),
        ("MINION_CONCURRENCY", "0", "whole number from 1 to 1024"),
        ("MINION_MAX_ATTEMPTS", "-1", "whole number >= 1"),
        ("MINION_TIMEOUT", "soon", "number of seconds"),
        ("MINION_GRACE_PERIOD", "-5", "number of seconds"),
        ("MINION_DRY", "maybe", "expected one of 1, true"),
        ("MINION_LOG_LEVEL", "LOUD", "expected one of"),
        ("MINION_LOG_FORMAT", "JSON", "did you mean 'json'? (expected one of json, text)"),
        ("MINION_ARGS", "--lr {lr", "not a valid template"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as error:
        config.Settings.from_env({variable: value})
    assert str(error.value).startswith(f"{variable}={value!r}: ")
    assert accepted in str(error.value)


def test_empty_value_means_unset() -> None:
    assert config.Settings.from_env({"MINION_TIMEOUT": "", "MINION_CONCURRENCY": ""}).concurrency == 1


def test_legacy_ep_variable() -> None:
    assert config.Settings.from_env({"EP": "file"}).engine == "file"


def test_unknown_engine_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="did you mean 'execo'"):
        registry.engine_class("exceo")


def test_missing_optional_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_pika_engine.py").write_text("import pika_is_not_installed_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.EXTRAS, "pika_is_not_installed_here", "amqp")
    registry_ = {"rabbit": "needs_pika_engine:Engine"}
    with pytest.raises(MissingExtra, match=r"pip install 'minionize\[amqp\]'"):
        registry.load(registry_, "MINION_ENGINE", "rabbit")


def test_an_engine_without_its_client_names_the_extra_named_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lab_engine.py").write_text("import lab_client_is_not_installed_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.ENGINES, "lab", "lab_engine:LabEngine")
    with pytest.raises(MissingExtra, match=r"pip install 'minionize\[lab\]'"):
        registry.engine_class("lab")


def test_every_engine_that_needs_a_client_has_an_extra_named_after_it() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    core = {"execo", "file", "memory"}  # nothing beyond minionize's own dependencies
    assert set(registry.ENGINES) - core <= set(extras)
    assert set(registry.ENGINES) - core <= set(extras["all"][0][len("minionize["):-1].split(","))


def test_dotenv_does_not_override_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MINION_ENGINE=file\nMINION_CONCURRENCY=4\n")
    environ = {"MINION_ENGINE": "execo"}
    config.load_environment(environ, tmp_path)
    assert environ == {"MINION_ENGINE": "execo", "MINION_CONCURRENCY": "4"}


def test_minionize_yml_gives_command_template_and_lowest_precedence(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MINION_CONCURRENCY=2\n")
    (tmp_path / ".minionize.yml").write_text(
        "command: [python3, train.py]\n"
        "args: --lr {lr}\n"
        "env:\n  MINION_CONCURRENCY: 8\n  MINION_TIMEOUT: 60\n  MINION_DRY: false\n"
    )
    environ: dict[str, str] = {}
    command = config.load_environment(environ, tmp_path)
    assert command == ("python3", "train.py")
    assert environ["MINION_CONCURRENCY"] == "2"  # .env beats the file
    assert environ["MINION_TIMEOUT"] == "60"
    settings = config.Settings.from_env(environ, command)
    assert settings.args_template == "--lr {lr}"
    assert settings.timeout == 60.0 and settings.dry is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("comand: [a]\n", "did you mean 'command'"),
        ("command: {a: 1}\n", "expected a string or a list"),
        ("env: [1, 2]\n", "expected a mapping"),
        ("command: [unclosed\n", "could not read it as YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("command: " + "[" * 100_000 + "]" * 100_000 + "\n", r"could not read it as YAML \(nested too deeply\)"),
    ],
    ids=["typo", "command", "env", "unclosed", "list", "nested too deeply"],
)
def test_bad_minionize_yml(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / ".minionize.yml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        config.load_environment({}, tmp_path)


def test_drain_signal_and_deadline_settings() -> None:
    import signal
    import time

    settings = config.Settings.from_env({"MINION_DEADLINE": "60"})
    assert settings.drain_signal == signal.SIGUSR2 and settings.drain_exit_code == 0
    assert settings.deadline is not None and 55 < settings.deadline - time.time() <= 60
    assert config.Settings.from_env({"MINION_DRAIN_SIGNAL": "none"}).drain_signal is None
    assert config.Settings.from_env({"MINION_DRAIN_SIGNAL": "10"}).drain_signal == signal.SIGUSR1
    absolute = config.Settings.from_env({"MINION_DEADLINE": "2030-01-01T00:00:00+00:00"}).deadline
    assert absolute == 1893456000.0
    for variable, value in [("MINION_DRAIN_SIGNAL", "SIGFOO"), ("MINION_DEADLINE", "tomorrow"),
                            ("MINION_DRAIN_EXIT_CODE", "300")]:
        with pytest.raises(ConfigError, match=f"^{variable}="):
            config.Settings.from_env({variable: value})


@pytest.mark.parametrize("value", ["SIGKILL", "KILL", "9", "SIGSTOP", "19", "SIGCHLD", "SIGCONT", "SIGPIPE", "SIGSEGV"])
def test_a_drain_signal_that_cannot_serve_is_a_config_error(value: str) -> None:
    unfit = r"^MINION_DRAIN_SIGNAL='.*': SIG[A-Z]+ .*: expected a signal such as SIGUSR2"
    with pytest.raises(ConfigError, match=unfit):
        config.Settings.from_env({"MINION_DRAIN_SIGNAL": value})


@pytest.mark.parametrize("value", ["SIGUSR1", "HUP", "SIGTERM", "12"])
def test_a_drain_signal_that_can_be_handled_is_accepted(value: str) -> None:
    assert config.Settings.from_env({"MINION_DRAIN_SIGNAL": value}).drain_signal is not None


def test_concurrency_is_bounded_and_the_error_says_why() -> None:
    assert config.Settings.from_env({"MINION_CONCURRENCY": str(config.MAX_CONCURRENCY)}).concurrency == 1024
    for value in (str(config.MAX_CONCURRENCY + 1), "5000000"):
        with pytest.raises(ConfigError) as error:
            config.Settings.from_env({"MINION_CONCURRENCY": value})
        assert str(error.value) == (
            f"MINION_CONCURRENCY={value!r}: expected a whole number from 1 to 1024 "
            "(a thread and a process per slot: start more minions for more)"
        )


def test_docker_callback_without_the_sdk_names_the_extra() -> None:
    import subprocess
    import sys

    # sys.modules[name] = None makes `import name` fail as if it were not installed.
    probe = (
        "import sys; sys.modules['docker'] = None\n"
        "from minionize.errors import MissingExtra\n"
        "try:\n    from minionize import DockerCallback\n"
        "except MissingExtra as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "pip install 'minionize[docker]'" in result.stdout, result.stderr


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_flag_counts_as_unset(value: str) -> None:
    reader = config.EnvReader({"REDIS_DELETE_ACKED": value, "MINION_DRY": value})
    assert reader.flag("REDIS_DELETE_ACKED", True) is True
    assert reader.flag("MINION_DRY", False) is False
    assert config.Settings.from_env({"MINION_TAG": value}).tag is False


def test_failed_exit_code_setting() -> None:
    assert config.Settings.from_env({}).failed_exit_code == 123
    assert config.Settings.from_env({"MINION_FAILED_EXIT_CODE": "0"}).failed_exit_code == 0
    for value in ("256", "-1", "x"):
        with pytest.raises(ConfigError, match="^MINION_FAILED_EXIT_CODE=.*expected a whole number from 0 to 255"):
            config.Settings.from_env({"MINION_FAILED_EXIT_CODE": value})


def test_a_dotenv_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"\xff\xfe=1\n")
    with pytest.raises(ConfigError, match=r"\.env: could not read it \('utf-8' codec"):
        config.load_environment({}, tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [('MINIONIZE_TEST_NUL: "a\\0b"', "embedded null byte"), ('"MINIONIZE_TEST=EQ": x', "illegal environment")],
    ids=["a NUL in a value", "= in a name"],
)
def test_what_no_environment_can_hold_is_an_error_of_the_file_that_says_it(tmp_path: Path, env: str,
                                                                         message: str) -> None:
    (tmp_path / ".minionize.yml").write_text(f"command: echo\nenv:\n  {env}\n")
    with pytest.raises(ConfigError, match=f"no environment variable can hold it \\({message}"):
        config.load_environment(os.environ, tmp_path)  # os.environ: what refuses them
    assert not any(name.startswith("MINIONIZE_TEST") for name in os.environ)
