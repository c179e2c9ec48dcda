"""The OAR and Slurm scripts of the README, run as the schedulers would run them.

A job array of 4 is started together: 4 real processes running the script
(examples/oar/oar.sh, examples/slurm/slurm.sh, the very text of the README's
blocks) with the scheduler's variables set, in one submission directory
whose `.env` chooses the engine and its sweep. Their minions share one execo
sweep. Midway, one job is SIGKILLed with its runs (a besteffort job taken
back, a node lost), and one gets the signal its script's directive asks for
(OAR's checkpoint, Slurm's `--signal`) and is killed when its walltime would
end. Every parameter must be done, at least once; none lost.

The script's program, `echo`, is found through PATH: a stand-in earlier in
PATH records each run's start and end and takes a moment, so that the kill
and the signal land while runs are under way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, minion_env

from .harness import kill_node, wait_for

pytestmark = pytest.mark.integration

PARAMS = 32
RUN_SECONDS = 0.5
LEASE_SECONDS = 3
#: The drain exit code of each script (OAR resubmits an idempotent job that exits 99).
DRAIN_EXIT = {"oar": 99, "slurm": 0}


@dataclass
class Scheduler:
    name: str
    script: Path
    #: The block of the README that holds the script's text.
    heading: str

    def signal(self) -> signal.Signals:
        """The signal the script's own directive asks the scheduler to send."""
        text = self.script.read_text()
        if self.name == "oar":
            found = re.search(r"^#OAR --signal (\d+)$", text, re.M)
            assert found, "no #OAR --signal"
            return signal.Signals(int(found[1]))
        found = re.search(r"^#SBATCH --signal=(?:B:)?(\w+)@\d+$", text, re.M)
        assert found, "no #SBATCH --signal"
        return signal.Signals["SIG" + found[1].removeprefix("SIG")]

    def env(self, index: int) -> dict[str, str]:
        """What the scheduler sets for the job of the array at `index` (1-based)."""
        array, job = "4242", str(4242 + index)
        if self.name == "oar":
            return {"OAR_JOB_ID": job, "OAR_JOBID": job, "OAR_ARRAY_ID": array, "OAR_ARRAY_INDEX": str(index)}
        return {"SLURM_JOB_ID": job, "SLURM_ARRAY_JOB_ID": array, "SLURM_ARRAY_TASK_ID": str(index),
                "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_JOB_NAME": "kpd"}

    def output(self, workdir: Path, index: int) -> Path:
        job = self.env(index)
        if self.name == "oar":
            return workdir / f"OAR.{job['OAR_JOB_ID']}.stdout"
        return workdir / f"slurm-{job['SLURM_ARRAY_JOB_ID']}_{job['SLURM_ARRAY_TASK_ID']}.out"


SCHEDULERS = [
    Scheduler("oar", ROOT / "examples" / "oar" / "oar.sh", "## On an OAR cluster"),
    Scheduler("slurm", ROOT / "examples" / "slurm" / "slurm.sh", "## On a Slurm cluster"),
]


def readme_script(heading: str) -> str:
    """The first bash block under `heading` in README.md that is a script (starts with #!)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    blocks = re.findall(r"^```bash\n(#!.*?)^```$", text[start:], re.M | re.S)
    assert blocks, f"no script under {heading!r}"
    return blocks[0]


def stand_in(workdir: Path) -> tuple[Path, Path]:
    """A directory holding an `echo` that records its runs; the record file."""
    bin_dir, record = workdir / "bin", workdir / "runs.log"
    bin_dir.mkdir()
    echo = bin_dir / "echo"
    echo.write_text(
        "#!/bin/sh\n"
        f"printf 'start %s\\n' \"$*\" >> '{record}'\n"
        f"sleep {RUN_SECONDS}\n"
        f"printf 'end %s\\n' \"$*\" >> '{record}'\n"
        'exec /bin/echo "$@"\n'
    )
    echo.chmod(0o755)
    return bin_dir, record


def runs(record: Path, event: str, job: str = "") -> list[str]:
    """The parameters of the runs that reached `event` (start, end), of one job or all."""
    text = record.read_text() if record.exists() else ""
    return re.findall(rf"^{event} hello from {job or '[0-9]+'} (\d+)$", text, re.M)


def midway(record: Path, job: str) -> bool:
    """The job has run a parameter and is running another."""
    started = runs(record, "start", job)
    return len(started) >= 2 and len(started) > len(runs(record, "end", job))


def campaign(workdir: Path) -> None:
    """The sweep, made as the README says, and the `.env` that chooses the engine and the sweep."""
    make = f"from execo_engine.sweep import ParamSweeper; ParamSweeper('campaign', sweeps=range({PARAMS}), " \
           "save_sweeps=True)"
    subprocess.run([sys.executable, "-c", make], cwd=workdir, check=True, timeout=60)
    (workdir / ".env").write_text(
        f"MINION_ENGINE=execo\nEXECO_PERSISTENCE_DIR=campaign\nMINION_LEASE_SECONDS={LEASE_SECONDS}\n"
    )


def sweep_state(workdir: Path) -> dict[str, set[int]]:
    """What execo itself reads in the sweep."""
    code = ("import json; from execo_engine.sweep import ParamSweeper; s = ParamSweeper('campaign'); "
            "print(json.dumps({k: sorted(getattr(s, 'get_' + k)()) for k in ('done', 'inprogress', 'remaining')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {key: set(value) for key, value in json.loads(out.stdout).items()}


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
def test_an_array_of_four_with_a_kill_and_a_checkpoint(scheduler: Scheduler, tmp_path: Path) -> None:
    assert readme_script(scheduler.heading) == scheduler.script.read_text(), "README and script differ"
    bin_dir, record = stand_in(tmp_path)
    campaign(tmp_path)
    base = minion_env(PATH=f"{bin_dir}:{os.environ['PATH']}", MINIONIZE_VENV=sys.prefix)
    jobs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for index in range(1, 5):
            with scheduler.output(tmp_path, index).open("wb") as out:
                # A session per job: a job and its runs are killed together, as a scheduler does.
                jobs[index] = subprocess.Popen(
                    [str(scheduler.script)], cwd=tmp_path, env={**base, **scheduler.env(index)},
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
        killed, checkpointed = (scheduler.env(i)[f"{scheduler.name.upper()}_JOB_ID"] for i in (1, 2))
        wait_for(lambda: midway(record, killed), 60, "job 1 running its second parameter")
        assert kill_node(jobs[1]) == 1  # killed midway: its parameter is in progress
        wait_for(lambda: midway(record, checkpointed), 60, "job 2 running its second parameter")
        jobs[2].send_signal(scheduler.signal())
        with suppress(subprocess.TimeoutExpired):
            jobs[2].wait(timeout=20)
        kill_node(jobs[2])  # the walltime: whatever is left of the job goes
        codes = {index: job.wait(timeout=90) for index, job in jobs.items()}
    finally:
        for job in jobs.values():
            kill_node(job)
    outputs = "\n".join(scheduler.output(tmp_path, i).read_text() for i in range(1, 5))
    assert codes == {1: -signal.SIGKILL, 2: DRAIN_EXIT[scheduler.name], 3: 0, 4: 0}, outputs
    assert "drain" in scheduler.output(tmp_path, 2).read_text().lower()
    ended = runs(record, "end")
    assert set(map(int, ended)) == set(range(PARAMS)), sorted(set(range(PARAMS)) - set(map(int, ended)))
    state = sweep_state(tmp_path)
    assert state == {"done": set(range(PARAMS)), "inprogress": set(), "remaining": set()}, state
    # The killed job's parameter was taken back by another job, after its lease.
    lost = set(runs(record, "start", killed)) - set(runs(record, "end", killed))
    assert lost and lost <= set(runs(record, "end"))
    # The jobs' output is where the scheduler puts it, each line naming its job.
    assert re.search(rf"^hello from {re.escape(scheduler.env(3)[f'{scheduler.name.upper()}_JOB_ID'])} \d+$",
                     scheduler.output(tmp_path, 3).read_text(), re.M)
