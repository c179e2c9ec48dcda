"""mtop: the real program in a real terminal (tmux), its incremental reader, and its cost at scale.

The fleet (see `fleet`), written by the real json reporter: node-a (pid 300,
job J1, MINION_TIMEOUT 60) runs {"x": "p-running-a"}, has 3 done and 1 failed
(whose stderr ends in "ValueError: boom-a") and sent a heartbeat just now;
node-b (pid 200) has 1 done and has written nothing for 100 s while "running"
p-stuck-b: it is stale; node-c (pid 100) did 5 and stopped ("drained").
node-a reported 10 parameters left.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from minionize import fleet, mtop
from minionize.message import Outcome
from minionize.reporters.base import MinionInfo, Probe, RunRecord
from minionize.reporters.json import JsonReporter, encode
from tests.conftest import minion_env, require

BOOM = Outcome.failure("exit code 3", exit_code=3, stderr_tail="Traceback\nValueError: boom-a\n")

#: The ETA as shown: a time of day, with the date when it falls after midnight (a run near midnight).
ETA = r"ETA: \d+m\d\ds \(about (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\)"
ETA_TOMORROW = r"ETA: \d+m\d\ds \(about \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)"


class Tmux:
    """A tmux server of its own (-L) running `command` in a terminal of `size` (columns, lines)."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], size: tuple[int, int] = (200, 50)) -> None:
        self.socket = f"minionize-test-{uuid.uuid4().hex[:8]}"
        self.env = env
        columns, lines = map(str, size)
        # curses believes COLUMNS and LINES before the terminal: they must say the same.
        command = f"env TERM=xterm COLUMNS={columns} LINES={lines} {command}"
        started = self.tmux("new-session", "-d", "-x", columns, "-y", lines, "-c", str(cwd), command)
        assert started.returncode == 0, started.stderr

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], env=self.env, capture_output=True,
                              text=True, timeout=10)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-200").stdout

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the terminal never showed what was expected; it shows:\n{screen}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.tmux("has-session").returncode == 0


@pytest.fixture
def terminal() -> Iterator[Callable[..., Tmux]]:
    require(shutil.which("tmux") is not None, "tmux")
    started: list[Tmux] = []

    def start(*argv: str, cwd: Path, size: tuple[int, int] = (200, 50)) -> Tmux:
        started.append(Tmux(shlex.join([sys.executable, *argv]), cwd, minion_env(), size))
        return started[-1]

    yield start
    for session in started:
        session.tmux("kill-server")


def run(reporter: JsonReporter, param: Any, start: float, outcome: Outcome, verdict: str, attempt: int = 1) -> None:
    record = RunRecord(f"id-{param}", param, attempt, 0, start)
    reporter.started(record)
    record.end, record.outcome, record.verdict = start + 2, outcome, verdict
    reporter.finished(record)


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Iterator[tuple[Path, JsonReporter]]:
    """The fleet of the module docstring; node-a's reporter stays open so that a test can go on writing."""
    directory = tmp_path / "minion-report"
    a = write_fleet(directory)
    yield directory, a
    a.close("drained")


def write_fleet(directory: Path) -> JsonReporter:
    """The fleet of the module docstring, in `directory` (created); node-a's reporter, still open."""
    now = time.time()
    a = JsonReporter(directory, timeout=60)
    a.open(MinionInfo("node-a-300-aaaaaa", "node-a", 300, "J1", "execo", 2, now - 200))
    for i in range(3):
        run(a, f"a{i}", now - 150 + 10 * i, Outcome.success(), "acked")
    run(a, "a-bad", now - 100, BOOM, "failed", attempt=3)
    a.started(RunRecord("id-run", {"x": "p-running-a"}, 2, 0, now - 5))
    a.heartbeat(Probe(alive=True, ready=True, draining=False, in_flight=1, free_slots=1))
    a.queue(10)
    b = JsonReporter(directory)
    b.open(MinionInfo("node-b-200-bbbbbb", "node-b", 200, "J2", "execo", 1, now - 300))
    run(b, "b0", now - 280, Outcome.success(), "acked")
    b.started(RunRecord("id-b1", "p-stuck-b", 1, 0, now - 100))
    c = JsonReporter(directory)
    c.open(MinionInfo("node-c-100-cccccc", "node-c", 100, None, "execo", 1, now - 250))
    for i in range(5):
        run(c, f"c{i}", now - 240 + 10 * i, Outcome.success(), "acked")
    c.close("drained")
    return a


def table(screen: str) -> list[list[str]]:
    """The rows under the column names, split into cells (two spaces or more apart)."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST "))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start + 1:] if line.startswith("node-")]


def row(screen: str, host: str) -> list[str]:
    return next(cells for cells in table(screen) if cells[0] == host)


# -- the real program in a real terminal ---------------------------------------


def test_mtop_shows_the_fleet_follows_it_sorts_and_quits(
    fleet_dir: tuple[Path, JsonReporter], terminal: Callable[..., Tmux]
) -> None:
    directory, a = fleet_dir
    screen_of = terminal("-m", "minionize.mtop", "--dir", str(directory), "--interval", "0.2", cwd=directory.parent)
    screen = screen_of.wait_for(lambda s: "node-c" in s)
    # node-b's run is not counted: a stale minion was most likely killed, its run with it.
    assert "minions: 3 (1 live, 1 stale, 1 stopped)   running: 1" in screen
    assert "progress: 9 done, 1 failed, 10 remaining (50% complete" in screen
    assert re.search(ETA, screen), screen
    assert "sort: HOST ^" in screen
    assert [cells[0] for cells in table(screen)] == ["node-a", "node-b", "node-c"]
    # HOST PID JOB STATE RUN TRY ELAPSED DONE FAIL PARAM LAST STDERR
    node_a = row(screen, "node-a")
    assert node_a[:6] == ["node-a", "300", "J1", "running", "1/2", "2"]
    elapsed = re.fullmatch(r"(\d+)s/1m00s", node_a[6])  # started 5 s before mtop, MINION_TIMEOUT=60
    assert elapsed and 5 <= int(elapsed[1]) < 60, node_a
    assert node_a[7:] == ["3", "1", '{"x": "p-running-a"}', "ValueError: boom-a"]
    assert row(screen, "node-b")[:4] == ["node-b", "200", "J2", "stale"]
    assert row(screen, "node-b")[9] == "p-stuck-b"
    assert row(screen, "node-c")[3:9] == ["stopped: drained", "0/1", "-", "-", "5", "0"]

    # node-a goes on writing: the next refresh shows it.
    record = RunRecord("id-run", {"x": "p-running-a"}, 2, 0, time.time() - 5)
    record.end, record.outcome, record.verdict = time.time(), Outcome.success(), "acked"
    a.finished(record)
    screen = screen_of.wait_for(lambda s: "progress: 10 done" in s)
    assert row(screen, "node-a")[3:9] == ["idle", "0/2", "-", "-", "4", "1"]

    screen_of.tmux("send-keys", "s")
    screen = screen_of.wait_for(lambda s: "sort: PID ^" in s)
    assert [cells[0] for cells in table(screen)] == ["node-c", "node-b", "node-a"]
    screen_of.tmux("send-keys", "8")
    screen = screen_of.wait_for(lambda s: "sort: DONE v" in s)
    assert [cells[:1] + cells[7:8] for cells in table(screen)] == [["node-c", "5"], ["node-a", "4"], ["node-b", "1"]]

    screen_of.tmux("send-keys", "q")
    deadline = time.monotonic() + 10
    while screen_of.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not screen_of.alive(), "mtop did not quit on q"


def test_mtop_finds_the_directory_through_dotenv(
    fleet_dir: tuple[Path, JsonReporter], terminal: Callable[..., Tmux], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"REPORTER_JSON_DIRECTORY={fleet_dir[0]}\n")
    screen = terminal("-m", "minionize.mtop", cwd=work).wait_for(lambda s: "node-c" in s)
    assert f"mtop  {fleet_dir[0]}  " in screen and len(table(screen)) == 3


def test_mtop_refuses_what_it_cannot_show(tmp_path: Path) -> None:
    def mtop_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "minionize.mtop", *args], cwd=tmp_path,
                              env=minion_env(**env), capture_output=True, text=True, timeout=60)

    (tmp_path / "a-file").write_text("")
    not_a_directory = mtop_cli("--dir", "a-file")
    assert not_a_directory.returncode == 2 and "no reports in a-file: not a directory" in not_a_directory.stderr
    missing = mtop_cli("--dir", "nowhere")  # a directory still to come is fine, but this is no terminal
    assert missing.returncode == 2 and "needs a terminal" in missing.stderr
    other = mtop_cli(MINION_REPORTER="stdout")
    assert other.returncode == 2 and "MINION_REPORTER='stdout'" in other.stderr
    (tmp_path / "minion-report").mkdir()
    no_terminal = mtop_cli()  # stdout is a pipe here
    assert no_terminal.returncode == 2 and "needs a terminal" in no_terminal.stderr
    assert mtop_cli("--interval", "0").returncode == 2


# -- the incremental reader ------------------------------------------------------


def line(**record: Any) -> bytes:
    return (encode({"minion": "m", "time": time.time(), **record}) + "\n").encode()


def test_the_reader_parses_only_what_was_appended(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(line(type="minion", host="h") + line(type="start", id="1", attempt=1))
    reader = fleet.ReportReader(tmp_path)
    assert [r["type"] for r in reader.poll()[0]] == ["minion", "start"]
    assert reader.poll() == ([], [])
    with open(path, "ab") as handle:
        handle.write(line(type="end", id="1", attempt=1, verdict="acked"))
    records, problems = reader.poll()
    assert [r["type"] for r in records] == ["end"] and problems == []
    assert not reader.rewound


def test_a_torn_line_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    whole = line(type="queue", remaining=7)
    path.write_bytes(line(type="minion") + whole[:20])
    reader = fleet.ReportReader(tmp_path)
    assert [r["type"] for r in reader.poll()[0]] == ["minion"]
    with open(path, "ab") as handle:
        handle.write(whole[20:-1])  # still no newline
    assert reader.poll() == ([], [])
    with open(path, "ab") as handle:
        handle.write(b"\n" + b'{"type": "end", "verd\n')  # then a line that will never be JSON
    records, problems = reader.poll()
    assert [(r["type"], r["remaining"]) for r in records] == [("queue", 7)]
    assert problems == ["m.jsonl: 1 unreadable line(s) skipped"]


def test_a_truncated_file_is_counted_again_not_twice(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    done = line(type="end", id="1", attempt=1, verdict="acked")
    path.write_bytes(line(type="minion") + done + done.replace(b'"1"', b'"2"'))
    live = mtop.Live(tmp_path)
    live.refresh()
    assert live.minions["m"].counts["done"] == 2
    path.write_bytes(line(type="minion") + done)  # a new campaign, same name
    live.refresh()
    assert live.minions["m"].counts["done"] == 1 and live.completed == 1


def test_live_aggregates_match_a_full_read(fleet_dir: tuple[Path, JsonReporter]) -> None:
    directory, a = fleet_dir
    live = mtop.Live(directory)
    live.refresh()
    a.queue(4)
    live.refresh()
    now = time.time()
    records, _ = fleet.load_records(directory)
    summary = fleet.summarize(records, now)
    rows = {r["minion"]: r for r in summary["minions"]}
    assert {m: s.row(now) for m, s in live.minions.items()} == rows
    assert live.queue is not None and live.queue["remaining"] == summary["queue"]["remaining"] == 4


def test_the_screen_scrolls_and_clamps(fleet_dir: tuple[Path, JsonReporter]) -> None:
    live = mtop.Live(fleet_dir[0])
    live.refresh()
    view = mtop.View()
    # At 200 columns the header takes 3 lines, then a blank one and the column names: room for two rows.
    height = 3 + 2 + 2
    assert len(mtop.screen_lines(live, view, time.time(), 200, height)) == height and view.page == 2
    assert mtop.handle_key(view, mtop.curses.KEY_NPAGE)
    lines = mtop.screen_lines(live, view, time.time(), 200, height)
    assert [text.split()[0] for text, _ in lines[5:]] == ["node-b", "node-c"]
    assert "rows 2-3 of 3" in lines[2][0] and view.top == 1  # clamped: no empty screen
    assert all(len(text) < 200 for text, _ in lines)
    styles = [style for text, style in lines if text.startswith("node-b")]
    assert styles == ["stale"]
    assert not mtop.handle_key(view, ord("q"))


def test_a_narrow_terminal_sheds_columns_before_the_parameter_and_stderr(
    fleet_dir: tuple[Path, JsonReporter]
) -> None:
    live = mtop.Live(fleet_dir[0])
    live.refresh()
    for width in (60, 80, 100):
        lines = [text for text, _ in mtop.screen_lines(live, mtop.View(), time.time(), width, 24)]
        assert all(len(text) < width for text in lines)
        node_a = next(line for line in lines if line.startswith("node-a"))
        assert re.search(r'\{"x": "p-runn', node_a) and "ValueError: boo" in node_a, lines
        # Header segments are whole: wrapped between them, never cut.
        assert any(line.startswith("throughput: 2.0/min recent, 3.0/min overall") for line in lines), lines
        assert any(re.match(r"progress: 9 done, 1 failed, 10 remaining( \(|$)", line) for line in lines), lines
        assert any(re.search(ETA, line) for line in lines), lines
        assert any("? keys, q quit" in line for line in lines)


# -- a fleet that is not there yet, the keys, a narrow terminal ---------------------


def test_mtop_waits_for_the_fleet_then_follows_it_at_80_columns(
    terminal: Callable[..., Tmux], tmp_path: Path
) -> None:
    directory = tmp_path / "minion-report"  # not there yet: the fleet starts after mtop
    screen_of = terminal("-m", "minionize.mtop", "--interval", "0.2", cwd=tmp_path, size=(80, 24))
    screen = screen_of.wait_for(lambda s: "waiting for" in s)
    assert "waiting for minion-report to appear" in screen  # the default directory, as the fleet will see it
    assert "minions: 0 (0 live, 0 stale, 0 stopped)" in screen
    a = write_fleet(directory)
    try:
        screen = screen_of.wait_for(lambda s: "node-c" in s)
    finally:
        a.close("drained")
    assert "waiting for" not in screen
    lines = screen.splitlines()
    assert all(len(line) < 80 for line in lines)
    assert "running: 1" in screen
    # Throughput and ETA on one line, but for an ETA after midnight, whose date makes it a line of its own.
    together = any(line.startswith("throughput: ") and "/min recent, " in line and "ETA: " in line for line in lines)
    assert together or any(re.match(ETA_TOMORROW, line) for line in lines), lines
    assert any(line.startswith("progress: 9 done, 1 failed, 10 remaining (50% complete;") for line in lines)
    assert "sort: HOST ^   rows 1-3 of 3   ? keys, q quit" in screen
    assert [cells[0] for cells in table(screen)] == ["node-a", "node-b", "node-c"]
    # HOST STATE ELAPSED DONE FAIL PARAM LAST STDERR: the parameter and the error are still readable.
    node_a = row(screen, "node-a")
    assert node_a[1] == "running" and node_a[3:5] == ["3", "1"], node_a
    assert node_a[5].startswith('{"x": "p-running') and node_a[6] == "ValueError: boom-a", node_a
    assert row(screen, "node-c")[1] == "stopped"

    screen_of.tmux("send-keys", "?")
    screen = screen_of.wait_for(lambda s: "mtop keys" in s)
    assert "node-a" not in screen
    for keys, what in mtop_keys():
        assert re.search(rf"^  {re.escape(keys)} +{re.escape(what)} *$", screen, re.M), (keys, screen)
    assert "1 HOST  2 PID  3 JOB  4 STATE  5 RUN" in screen
    screen_of.tmux("send-keys", "s")  # any key goes back, and does nothing else
    screen = screen_of.wait_for(lambda s: "node-a" in s)
    assert "sort: HOST ^" in screen and "mtop keys" not in screen
    screen_of.tmux("send-keys", "q")
    deadline = time.monotonic() + 10
    while screen_of.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not screen_of.alive(), "mtop did not quit on q"


def mtop_keys() -> list[tuple[str, str]]:
    from minionize.mtopview import KEYS

    return list(KEYS)


# -- responsiveness ----------------------------------------------------------------


def write_big_fleet(directory: Path, minions: int, per_minion: int) -> list[JsonReporter]:
    """`minions` real reporters writing `per_minion` records each (runs, some failed, heartbeats)."""
    now = time.time()
    reporters = []
    for m in range(minions):
        reporter = JsonReporter(directory, timeout=600)
        reporter.open(MinionInfo(f"node-{m:03d}-{1000 + m}-abcdef", f"node-{m:03d}", 1000 + m, f"job-{m}",
                                 "execo", 2, now - 3600))
        written, i = 1, 0  # the "minion" record; the "queue" record comes last
        while written < per_minion - 1:
            if i % 3 == 2 or written == per_minion - 2:
                reporter.heartbeat(Probe(True, True, False, 1, 1))
                written += 1
            else:
                failed = i % 10 == 0
                run(reporter, {"sample": i, "minion": m, "alpha": 0.5, "name": f"run-{m}-{i}"},
                    now - 3600 + 7 * i, BOOM if failed else Outcome.success(), "failed" if failed else "acked")
                written += 2
            i += 1
        reporter.queue(1000)
        reporters.append(reporter)
    return reporters


def test_a_refresh_reads_only_the_records_added_since_the_last_one_with_200_minions(tmp_path: Path) -> None:
    # How long these reads take is bench/status.py's (a million runs); here, what they read.
    reporters = write_big_fleet(tmp_path, 200, 50)
    lines = sum(path.read_bytes().count(b"\n") for path in tmp_path.glob("*.jsonl"))
    assert lines == 10_000
    live = mtop.Live(tmp_path)
    assert live.refresh() == 10_000
    mtop.screen_lines(live, mtop.View(), time.time(), 200, 50)

    for reporter in reporters[::10]:  # 20 minions write one more run each
        run(reporter, "late", time.time() - 2, Outcome.success(), "acked")
    assert live.refresh() == 40
    lines_shown = mtop.screen_lines(live, mtop.View(sort=7), time.time(), 200, 50)
    assert live.refresh() == 0
    mtop.screen_lines(live, mtop.View(), time.time(), 200, 50)
    acked = sum(path.read_bytes().count(b'"verdict": "acked"') for path in tmp_path.glob("*.jsonl"))
    assert sum(s.counts["done"] for s in live.minions.values()) == acked and len(live.minions) == 200
    assert "of 200" in lines_shown[2][0]
