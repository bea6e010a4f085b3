"""The lock file shared by processes and hosts: mutual exclusion between real processes, stale-lock takeover."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mamol import missing
from mamol.locks import FileLock, LockTimeout

REPO = Path(__file__).resolve().parents[1]

# Each process takes the lock `rounds` times and, inside it, appends a begin and an end record with a pause
# between: if two processes were ever inside at once their records would interleave.
WORKER = """
import os, sys, time
from mamol.locks import FileLock
lock_path, log_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(rounds):
    with FileLock(lock_path, poll=0.001):
        with open(log_path, "a") as log:
            log.write(f"begin {os.getpid()} {i}\\n"); log.flush()
            time.sleep(0.01)
            log.write(f"end {os.getpid()} {i}\\n"); log.flush()
"""


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _leave_lock(path: Path, host: str, pid: int, taken: float) -> None:
    path.write_text(json.dumps({"host": host, "pid": pid, "time": taken, "token": "left-behind"}))


@pytest.mark.parametrize("left_behind", [False, True], ids=["free", "stale-at-start"])
def test_two_processes_never_hold_the_lock_at_once(tmp_path, left_behind):
    lock, log = tmp_path / "shared.lock", tmp_path / "records.txt"
    if left_behind:  # both start by judging the same dead owner's lock stale: only one may take it over
        _leave_lock(lock, socket.gethostname(), _dead_pid(), time.time())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(lock), str(log), "15"], env=env, cwd=REPO)
             for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    records = [line.split() for line in log.read_text().splitlines()]
    assert len(records) == 2 * 2 * 15
    for begin, end in zip(records[::2], records[1::2]):
        assert begin[0] == "begin" and end[0] == "end" and begin[1:] == end[1:], records
    assert {r[1] for r in records} == {str(p.pid) for p in procs}  # both took part
    assert not lock.exists()  # released


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
    lock = tmp_path / "shared.lock"
    _leave_lock(lock, socket.gethostname(), _dead_pid(), time.time())
    with FileLock(lock, timeout=5) as held:
        assert json.loads(lock.read_text())["pid"] == os.getpid() == held.owner.pid
    assert not lock.exists()


def test_a_lock_file_its_owner_never_wrote_is_taken_over_once_old(tmp_path):
    lock = tmp_path / "shared.lock"
    lock.write_text("")  # a process died between creating the file and writing its record
    with pytest.raises(LockTimeout, match="an owner still writing its record"):
        FileLock(lock, timeout=0.2).acquire()
    old = time.time() - 60
    os.utime(lock, (old, old))
    with FileLock(lock, timeout=5):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_lock_from_another_host_is_taken_over_only_when_old(tmp_path):
    lock = tmp_path / "shared.lock"
    _leave_lock(lock, "other-node", 12345, time.time())
    with pytest.raises(LockTimeout, match=r"held by host other-node, pid 12345.*delete .*shared\.lock"):
        FileLock(lock, timeout=0.2, stale_after=60).acquire()
    _leave_lock(lock, "other-node", 12345, time.time() - 120)
    with FileLock(lock, timeout=5, stale_after=60):
        assert json.loads(lock.read_text())["host"] == socket.gethostname()


def test_a_live_owner_is_waited_for_and_named(tmp_path):
    lock = tmp_path / "shared.lock"
    with FileLock(lock), pytest.raises(LockTimeout, match=f"host {socket.gethostname()}, pid {os.getpid()}"):
        FileLock(lock, timeout=0.2).acquire()
    with FileLock(lock, timeout=1):  # free again once released
        pass


def test_missing_tables_take_the_shared_lock(tmp_path):
    """The missing-table folder lock is the lock file, so a holder elsewhere (another node) is respected."""
    with missing._folder_lock(tmp_path):
        (held,) = [p for p in tmp_path.iterdir() if p.name.endswith(".lock")]
        assert json.loads(held.read_text())["pid"] == os.getpid()
        with pytest.raises(LockTimeout):
            FileLock(held, timeout=0.2).acquire()
