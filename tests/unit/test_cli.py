"""The `minionize` command end to end: real processes, a real execo sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from execo_engine.sweep import ParamSweeper

from tests.conftest import ROOT, minion_env, minionize_cmd, run_minion

PROGRAMS = ROOT / "tests" / "programs"


def sweep(cwd: Path, params: object, name: str = "sweeps") -> None:
    ParamSweeper(str(cwd / name), sweeps=params, save_sweeps=True)


def spawn(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        minionize_cmd(*args), cwd=cwd, env=minion_env(**env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_readme_example_three_minions_each_param_once(tmp_path: Path) -> None:
    sweep(tmp_path, range(10))
    minions = [spawn(tmp_path, "echo", "hello", MINION_ENGINE="execo") for _ in range(3)]
    outputs = [m.communicate(timeout=60) for m in minions]
    assert [m.returncode for m in minions] == [0, 0, 0]
    lines = sorted(line for out, _ in outputs for line in out.splitlines())
    assert lines == sorted(f"hello {i}" for i in range(10))
    assert sorted(ParamSweeper(str(tmp_path / "sweeps")).get_done()) == list(range(10))


def test_shell_metacharacters_reach_the_program_literally(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    param = f"$(touch {pwned}); echo x"
    (tmp_path / "in.txt").write_text(param + "\n`touch " + str(pwned) + "`\n")
    result = run_minion(
        sys.executable, str(PROGRAMS / "argv.py"), cwd=tmp_path,
        MINION_ENGINE="file", FILE_PATH="in.txt",
    )
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert runs[0]["argv"] == ["$(touch", f"{pwned});", "echo", "x"]
    assert runs[1]["argv"] == ["`touch", f"{pwned}`"]
    assert runs[0]["env"]["MINION_PARAM"] == json.dumps(param)
    assert not pwned.exists()


def test_retries_then_set_aside_with_its_exit_code(tmp_path: Path) -> None:
    sweep(tmp_path, ["3", "0"])
    runs = tmp_path / "runs"
    runs.mkdir()
    result = run_minion(
        sys.executable, str(PROGRAMS / "record.py"), str(runs), "0",
        cwd=tmp_path, MINION_MAX_ATTEMPTS="3", MINION_ARGS="{param} {param}",
    )
    # record.py's third argument is its exit code: the parameter itself here.
    assert result.returncode == 123  # a parameter was set aside, as xargs says it
    assert len(list(runs.glob("3.*.start"))) == 3
    assert len(list(runs.glob("0.*.start"))) == 1
    assert "failed, attempt 3: exit code 3" in result.stderr
    reader = ParamSweeper(str(tmp_path / "sweeps"))
    assert sorted(reader.get_done()) == ["0"]
    # a new minion does not take the failed parameter again
    again = run_minion("true", cwd=tmp_path)
    assert again.returncode == 0 and "nothing done" in again.stderr


def test_timeout_kills_the_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    (tmp_path / "in.txt").write_text("x\n")
    started = time.monotonic()
    result = run_minion(
        sys.executable, str(PROGRAMS / "grandchild.py"), str(pidfile), cwd=tmp_path,
        MINION_ENGINE="file", FILE_PATH="in.txt", MINION_TIMEOUT="1", MINION_MAX_ATTEMPTS="1",
    )
    assert result.returncode == 123
    assert time.monotonic() - started < 15
    assert "timed out after 1s" in result.stderr
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not _alive(grandchild), 5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie waiting for its reaper is dead for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_gives_the_parameter_to_a_second_minion(tmp_path: Path, signum: int) -> None:
    sweep(tmp_path, ["long"])
    runs = tmp_path / "runs"
    runs.mkdir()
    args = (sys.executable, str(PROGRAMS / "record.py"), str(runs), "30", "0")
    first = spawn(tmp_path, *args, MINION_GRACE_PERIOD="0.5")
    wait_for(lambda: any(runs.glob("long.*.start")))
    first.send_signal(signum)
    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert f"{signal.Signals(signum).name}: taking no new parameter" in err and "1 released" in err
    assert not any(runs.glob("*.end"))
    second = run_minion(*args[:3], "0.1", "0", cwd=tmp_path)
    assert second.returncode == 0
    assert len(list(runs.glob("long.*.end"))) == 1
    assert ParamSweeper(str(tmp_path / "sweeps")).get_done() == {"long"}


def test_sigterm_within_grace_lets_the_run_finish(tmp_path: Path) -> None:
    sweep(tmp_path, ["a", "b"])
    runs = tmp_path / "runs"
    runs.mkdir()
    program = (sys.executable, str(PROGRAMS / "record.py"), str(runs), "1", "0")
    minion = spawn(tmp_path, *program, MINION_GRACE_PERIOD="20")
    wait_for(lambda: any(runs.glob("*.start")))
    minion.send_signal(signal.SIGINT)
    _, err = minion.communicate(timeout=30)
    assert minion.returncode == 0, err
    assert len(list(runs.glob("*.end"))) == 1  # finished, and nothing new was taken
    assert len(ParamSweeper(str(tmp_path / "sweeps")).get_done()) == 1


def test_second_signal_is_a_cold_stop(tmp_path: Path) -> None:
    sweep(tmp_path, ["x"])
    runs = tmp_path / "runs"
    runs.mkdir()
    program = (sys.executable, str(PROGRAMS / "record.py"), str(runs), "30", "0")
    minion = spawn(tmp_path, *program, MINION_GRACE_PERIOD="60")
    wait_for(lambda: any(runs.glob("*.start")))
    minion.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    minion.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, err = minion.communicate(timeout=30)
    assert minion.returncode == 130, err
    assert time.monotonic() - started < 5
    # the parameter was given back: a new minion can take it
    reader = ParamSweeper(str(tmp_path / "sweeps"))
    assert reader.get_inprogress() == set() and reader.get_done() == set()


# An engine whose open() takes a while, and says when it begins: a signal can then land while the minion starts.
_SLOW_OPEN = """
import os, time
from minionize.engines.memory import MemoryEngine

class SlowOpen(MemoryEngine):
    def open(self):
        open(os.environ["OPENING"], "w").close()
        time.sleep(5)
        super().open()
"""


def _starting(tmp_path: Path) -> subprocess.Popen[str]:
    """A minion inside its engine's open()."""
    (tmp_path / "slowopen.py").write_text(_SLOW_OPEN)
    opening = tmp_path / "opening"
    minion = spawn(tmp_path, "echo", "ran", MINION_ENGINE="slowopen:SlowOpen", MEMORY_PARAMS="[1, 2]",
                   OPENING=str(opening), PYTHONPATH=str(tmp_path))
    wait_for(opening.exists)
    return minion


def test_a_stop_while_starting_is_a_warm_stop_before_anything_is_taken(tmp_path: Path) -> None:
    minion = _starting(tmp_path)
    minion.send_signal(signal.SIGINT)
    out, err = minion.communicate(timeout=30)
    assert minion.returncode == 0, err
    assert "Traceback" not in err and "stopped by SIGINT (nothing done)" in err
    assert out == ""  # nothing was taken


def test_a_second_stop_while_starting_is_a_cold_stop_never_a_traceback(tmp_path: Path) -> None:
    minion = _starting(tmp_path)
    minion.send_signal(signal.SIGINT)
    time.sleep(0.2)
    minion.send_signal(signal.SIGTERM)
    started = time.monotonic()
    out, err = minion.communicate(timeout=30)
    assert minion.returncode == 130, err
    assert time.monotonic() - started < 4  # the open() was not waited for
    said = "minionize: cold stop while starting (SIGINT, then SIGTERM): nothing was taken"
    assert err.strip().splitlines()[-1] == said
    assert "Traceback" not in err and out == ""


def test_a_signal_ignored_at_start_stays_ignored_as_nohup_asks(tmp_path: Path) -> None:
    # `nohup minionize ...` ignores SIGHUP: the ssh session that ends does not stop the minion.
    sweep(tmp_path, ["long"])
    runs = tmp_path / "runs"
    runs.mkdir()
    minion = subprocess.Popen(
        minionize_cmd(sys.executable, str(PROGRAMS / "record.py"), str(runs), "30", "0"), cwd=tmp_path,
        env=minion_env(MINION_GRACE_PERIOD="0.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    wait_for(lambda: any(runs.glob("long.*.start")))
    minion.send_signal(signal.SIGHUP)
    time.sleep(1)
    minion.send_signal(signal.SIGTERM)
    _, err = minion.communicate(timeout=30)
    assert minion.returncode == 0, err
    assert "SIGHUP" not in err and "SIGTERM: taking no new parameter" in err


def test_concurrency_runs_overlap_never_more_than_n(tmp_path: Path) -> None:
    sweep(tmp_path, [str(i) for i in range(8)])
    runs = tmp_path / "runs"
    runs.mkdir()
    result = run_minion(
        sys.executable, str(PROGRAMS / "record.py"), str(runs), "0.5", "0",
        cwd=tmp_path, MINION_CONCURRENCY="3",
    )
    assert result.returncode == 0, result.stderr
    spans = []
    for start in runs.glob("*.start"):
        begin, slot, _ = start.read_text().split()
        end = float(start.with_suffix(".end").read_text())
        spans.append((float(begin), end, int(slot)))
    assert len(spans) == 8
    peak = max(sum(1 for b, e, _ in spans if b <= t < e) for t, _, _ in spans)
    assert peak == 3
    assert {slot for _, _, slot in spans} == {0, 1, 2}


def test_dotenv_is_read_without_overriding_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FROM_ENV=dotenv\nFROM_DOTENV=dotenv\nMINION_ENGINE=file\nFILE_PATH=in.txt\n")
    (tmp_path / "in.txt").write_text("p\n")
    result = run_minion(sys.executable, str(PROGRAMS / "argv.py"), cwd=tmp_path, FROM_ENV="environment")
    assert result.returncode == 0, result.stderr
    env = json.loads(result.stdout)["env"]
    assert env["FROM_ENV"] == "environment" and env["FROM_DOTENV"] == "dotenv"


def test_minionize_yml_alone_is_enough(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"lr": 0.1, "seed": 7}\n')
    (tmp_path / ".minionize.yml").write_text(
        f"command: [{sys.executable}, {PROGRAMS / 'argv.py'}]\n"
        "args: --lr {lr} --seed {seed}\n"
        "env:\n  MINION_ENGINE: file\n  FILE_PATH: in.jsonl\n  FILE_DECODER: json\n"
    )
    result = run_minion(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["argv"] == ["--lr", "0.1", "--seed", "7"]
    assert run["env"]["MINION_PARAM_SEED"] == "7"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MINION_ENGINE": "exceo"}, "MINION_ENGINE='exceo': did you mean 'execo'?"),
        ({"MINION_CONCURRENCY": "abc"}, "MINION_CONCURRENCY='abc': expected a whole number from 1 to 1024"),
        ({"MINION_REPORTER": "jsn"}, "MINION_REPORTER='jsn': did you mean 'json'?"),
        ({"MINION_TIMEOUT": "-3"}, "MINION_TIMEOUT='-3': expected a number of seconds >= 0"),
        ({"EXECO_PERSISTENCE_DIR": "nowhere"}, "EXECO_PERSISTENCE_DIR='nowhere': no sweep there"),
        ({"MINION_ENGINE": "file", "FILE_PATH": "missing.txt"}, "FILE_PATH='missing.txt': expected an existing file"),
        ({"MINION_ENGINE": "memory", "MEMORY_PARAMS": "{"}, "MEMORY_PARAMS='{': expected a JSON list"),
    ],
)
def test_bad_configuration_exits_2_with_one_line_and_takes_nothing(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    sweep(tmp_path, ["untouched"])
    result = run_minion("echo", cwd=tmp_path, **env)
    assert result.returncode == 2
    assert result.stderr == f"minionize: {message}" + result.stderr.split(message, 1)[1]
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    reader = ParamSweeper(str(tmp_path / "sweeps"))
    assert reader.get_done() == set() and reader.get_inprogress() == set()


def test_missing_command_and_unknown_program_exit_2(tmp_path: Path) -> None:
    sweep(tmp_path, ["x"])
    no_command = run_minion(cwd=tmp_path)
    assert no_command.returncode == 2 and "give the program to run" in no_command.stderr
    unknown = run_minion("no-such-program-xyz", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "minionize: command='no-such-program-xyz': command not found in PATH"


def test_dry_run_prints_and_consumes_nothing(tmp_path: Path) -> None:
    sweep(tmp_path, ["1", "2"])
    result = run_minion("echo", "hello", cwd=tmp_path, DRY="1")
    assert result.returncode == 0
    assert sorted(result.stdout.splitlines()) == ["DRY: echo hello 1", "DRY: echo hello 2"]
    reader = ParamSweeper(str(tmp_path / "sweeps"))
    assert reader.get_done() == set() and reader.get_inprogress() == set()
    real = run_minion("echo", "hello", cwd=tmp_path)
    assert sorted(real.stdout.splitlines()) == ["hello 1", "hello 2"]


def test_import_loads_no_broker_client(tmp_path: Path) -> None:
    sweep(tmp_path, [1])
    probe = (
        "import sys, minionize.cli; "
        "sys.argv = ['minionize', 'true']; rc = minionize.cli.main(); "
        "heavy = ('grpc', 'google', 'pulsar', 'docker', 'redis', 'pika', 'execo', 'execo_engine'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
        "print(rc, bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=minion_env(), capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "0 []", result.stderr


def test_help_and_version() -> None:
    assert "usage: minionize" in run_minion("--help", cwd=ROOT).stdout
    assert run_minion("--version", cwd=ROOT).stdout.startswith("minionize ")


def test_json_reports_of_two_minions_read_by_minion_status(tmp_path: Path) -> None:
    sweep(tmp_path, [str(i) for i in range(6)] + ["bad"])
    report = tmp_path / "shared-report"
    env = {"MINION_REPORTER": "json", "REPORTER_JSON_DIRECTORY": str(report), "MINION_MAX_ATTEMPTS": "2"}
    # `test PARAM != bad`: exit 1 for "bad" only, with no shell involved
    program = ("test", "bad", "!=")
    minions = [spawn(tmp_path, *program, OAR_JOB_ID=f"job-{i}", **env) for i in range(2)]
    for m in minions:
        m.communicate(timeout=60)
    assert sorted(m.returncode for m in minions) == [0, 123]  # the one that set "bad" aside says so
    assert len(list(report.glob("*.jsonl"))) == 2
    status = subprocess.run(
        [sys.executable, "-m", "minionize.status", "--json"], cwd=tmp_path,
        env=minion_env(REPORTER_JSON_DIRECTORY=str(report)), capture_output=True, text=True, timeout=60,
    )
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["totals"]["done"] == 6
    assert summary["totals"]["failed"] == 1
    assert summary["totals"]["running"] == 0
    assert sorted(row["job_id"] for row in summary["minions"]) == ["job-0", "job-1"]
    assert sum(row["done"] for row in summary["minions"]) == 6
    text = subprocess.run(
        [sys.executable, "-m", "minionize.status"], cwd=tmp_path,
        env=minion_env(MINION_REPORTER="json", REPORTER_JSON_DIRECTORY=str(report)),
        capture_output=True, text=True, timeout=60,
    ).stdout
    assert "6 done" in text and "1 failed" in text and "exit code 1" in text


def test_importtime_of_the_cli_shows_no_broker_client() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import minionize.cli"],
        env=minion_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "minionize" in imported
    assert imported.isdisjoint({"grpc", "google", "pulsar", "docker", "redis", "pika", "execo_engine"})


def test_drain_signal_releases_and_exits_with_the_configured_code(tmp_path: Path) -> None:
    sweep(tmp_path, ["long", "next"])
    runs = tmp_path / "runs"
    runs.mkdir()
    program = (sys.executable, str(PROGRAMS / "record.py"), str(runs), "30", "0")
    minion = spawn(tmp_path, *program, MINION_GRACE_PERIOD="0.5", MINION_DRAIN_EXIT_CODE="99")
    wait_for(lambda: any(runs.glob("*.start")))
    minion.send_signal(signal.SIGUSR2)
    _, err = minion.communicate(timeout=30)
    assert minion.returncode == 99, err
    assert "drained on SIGUSR2" in err
    reader = ParamSweeper(str(tmp_path / "sweeps"))
    assert reader.get_done() == set() and reader.get_inprogress() == set()
    assert len(list(runs.glob("*.start"))) == 1  # "next" was never taken


def test_drain_signal_can_be_chosen(tmp_path: Path) -> None:
    sweep(tmp_path, ["long"])
    runs = tmp_path / "runs"
    runs.mkdir()
    program = (sys.executable, str(PROGRAMS / "record.py"), str(runs), "30", "0")
    minion = spawn(tmp_path, *program, MINION_GRACE_PERIOD="0.5", MINION_DRAIN_SIGNAL="USR1")
    wait_for(lambda: any(runs.glob("*.start")))
    minion.send_signal(signal.SIGUSR1)
    _, err = minion.communicate(timeout=30)
    assert minion.returncode == 0 and "drained on SIGUSR1" in err


def test_deadline_stops_taking_but_lets_the_run_finish(tmp_path: Path) -> None:
    sweep(tmp_path, [str(i) for i in range(5)])
    runs = tmp_path / "runs"
    runs.mkdir()
    program = (sys.executable, str(PROGRAMS / "record.py"), str(runs), "1.5", "0")
    result = run_minion(*program, cwd=tmp_path, MINION_DEADLINE="1")
    assert result.returncode == 0 and "deadline reached" in result.stderr
    assert len(list(runs.glob("*.end"))) == 1  # started before the deadline, finished after it
    assert len(ParamSweeper(str(tmp_path / "sweeps")).get_done()) == 1


def test_the_issues_literal_parameter_executes_nothing(tmp_path: Path) -> None:
    pwned = Path("/tmp/pwned")
    pwned.unlink(missing_ok=True)
    (tmp_path / "in.txt").write_text("$(touch /tmp/pwned); echo x\n")
    result = run_minion("echo", cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt")
    assert result.returncode == 0
    assert result.stdout == "$(touch /tmp/pwned); echo x\n"
    assert not pwned.exists()


def test_start_up_leaves_rarely_needed_modules_unimported() -> None:
    """A few milliseconds each, at every minion start (bench/startup.py): imported only when needed."""
    rare = ("subprocess", "socket", "tempfile", "shutil", "datetime", "selectors")
    code = f"import minionize.cli, sys; print([m for m in {rare!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], env=minion_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- section 6 of issue 11: what xargs and GNU parallel users reach for ----------


def test_piped_parameters_are_read_from_stdin_like_xargs(tmp_path: Path) -> None:
    result = subprocess.run(
        minionize_cmd("echo", "n"), cwd=tmp_path, env=minion_env(), input="1\n2\n3\n",
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["n 1", "n 2", "n 3"]
    assert "stdin is a pipe: taking parameters from stdin" in result.stderr
    for setting in ("engine", "sweep", "devnull"):
        _execo_is_still_meant(tmp_path / setting, setting)


def _execo_is_still_meant(cwd: Path, setting: str) -> None:
    """A chosen engine, an existing sweep directory, or the /dev/null of a batch job or a container keep execo."""
    cwd.mkdir()
    env = {"MINION_ENGINE": "execo"} if setting == "engine" else {}
    if setting == "sweep":
        (cwd / "sweeps").mkdir()
    stdin = subprocess.DEVNULL if setting == "devnull" else None
    result = subprocess.run(
        minionize_cmd("echo"), cwd=cwd, env=minion_env(**env), stdin=stdin,
        input=None if stdin is not None else "x\n", capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "no sweep there" in result.stderr, (setting, result.stderr)
    assert result.stdout == ""


def test_a_file_on_stdin_is_read_too(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    with open(tmp_path / "in.txt") as stdin:
        result = subprocess.run(minionize_cmd("echo"), cwd=tmp_path, env=minion_env(), stdin=stdin,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "a\n", result.stderr
    assert "stdin is a file" in result.stderr


def test_flags_set_the_settings_and_stop_at_the_first_word(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("p\n")
    result = run_minion(
        "-j", "2", "--timeout=30", "--engine", "file", sys.executable, str(PROGRAMS / "argv.py"), "--timeout", "3",
        cwd=tmp_path, MINION_ENGINE="execo", FILE_PATH="in.txt",  # the flag wins over the variable
    )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["argv"] == ["--timeout", "3", "p"]


def test_double_dash_ends_the_flags(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("p\n")
    weird = tmp_path / "--weird"
    weird.write_text("#!/bin/sh\n")
    weird.chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    result = run_minion("--dry-run", "--", "--weird", cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt", PATH=path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "DRY: --weird p\n"


def test_retries_flag_counts_retries_after_the_first_attempt(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("p\n")
    once = run_minion("--retries", "0", "false", cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt")
    assert once.returncode == 123 and "failed, attempt 1" in once.stderr, once.stderr
    twice = run_minion("--retries", "1", "false", cwd=tmp_path, MINION_ENGINE="file", FILE_PATH="in.txt")
    assert "retried, attempt 1" in twice.stderr and "failed, attempt 2" in twice.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-j", "zero", "echo"], "minionize: -j='zero': expected a whole number from 1 to 1024"),
        (["--concurency", "2", "echo"], "minionize: flag='--concurency': did you mean '--concurrency'?"),
        (["--timeout"], "minionize: --timeout=(unset): expected a value after it"),
        (["--retries", "-1", "echo"], "minionize: --retries='-1': expected a whole number >= 0"),
        (["--engine", "fiel", "echo"], "minionize: --engine='fiel': did you mean 'file'?"),
    ],
)
def test_a_bad_flag_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_minion(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr


def test_failed_exit_code_can_be_turned_off_or_chosen(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("p\n")
    env = {"MINION_ENGINE": "file", "FILE_PATH": "in.txt", "MINION_MAX_ATTEMPTS": "1"}
    assert run_minion("false", cwd=tmp_path, MINION_FAILED_EXIT_CODE="0", **env).returncode == 0
    assert run_minion("false", cwd=tmp_path, MINION_FAILED_EXIT_CODE="7", **env).returncode == 7
    assert run_minion("true", cwd=tmp_path, **env).returncode == 0


@pytest.mark.parametrize("command", ["minionize", "minionize.push", "minionize.status", "minionize.mtop"])
def test_every_command_has_version(command: str) -> None:
    from minionize import __version__

    result = subprocess.run([sys.executable, "-m", command, "--version"], capture_output=True, text=True,
                            timeout=60, env=minion_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == __version__


def test_help_lists_every_variable_of_the_runtime() -> None:
    import re

    source = (ROOT / "minionize" / "config.py").read_text()
    variables = set(re.findall(r'"(MINION_[A-Z_]+)"', source)) | {"MINION_LEASE_SECONDS", "REPORTER_JSON_DIRECTORY"}
    shown = run_minion("--help", cwd=ROOT).stdout
    assert sorted(v for v in variables if v not in shown) == []


@pytest.mark.parametrize("where", ["environment", ".env", ".minionize.yml"])
def test_a_misspelled_variable_gets_a_warning_with_the_close_match(tmp_path: Path, where: str) -> None:
    (tmp_path / "in.txt").write_text("p\n")
    env = {"MINION_ENGINE": "file", "FILE_PATH": "in.txt"}
    if where == "environment":
        env["MINION_CONCURENCY"] = "2"
    elif where == ".env":
        (tmp_path / ".env").write_text("MINION_CONCURENCY=2\n")
    else:
        (tmp_path / ".minionize.yml").write_text("env:\n  MINION_CONCURENCY: 2\n")
    result = run_minion("true", cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert "MINION_CONCURENCY is not a minionize variable (ignored): did you mean MINION_CONCURRENCY?" in result.stderr
    assert "MINION_ENGINE is not" not in result.stderr and "FILE_PATH is not" not in result.stderr


@pytest.mark.parametrize("module", ["minionize", "minionize.push", "minionize.status"])
def test_a_working_directory_deleted_under_the_shell_is_one_line_not_a_traceback(tmp_path: Path,
                                                                                 module: str) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "$0" -m {module} "$@"'
    args = ["true"] if module == "minionize" else ["1"] if module == "minionize.push" else []
    done = subprocess.run(["sh", "-c", script, sys.executable, *args], env=minion_env(MINION_ENGINE="file"),
                          input="1\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.endswith("the working directory: it no longer exists (deleted since the shell entered "
                                "it): cd to one that does\n") and "Traceback" not in done.stderr
