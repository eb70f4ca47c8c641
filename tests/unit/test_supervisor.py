"""`conveyor dev up` restarts a crashed service with back-off (1 s, 2 s, 4 s ...
at most 30 s, from 1 s again once it stayed up), and stops if a stand-in dies.
Real child processes; the supervisor's clock is passed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor_cli.localstack.processes import Backoff, ManagedProcess, Supervisor
from conveyor_cli.localstack.stack import LocalStack, StandInExited
from tests.support import json_lines


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    assert [Backoff().delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def crashed(supervisor: Supervisor) -> Supervisor:
    assert supervisor.process.process is not None
    supervisor.process.process.wait()
    return supervisor


def test_a_crashing_service_waits_longer_each_time_and_from_one_second_once_it_stayed_up(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    worker = ManagedProcess("worker", ["sh", "-c", "exit 3"], log).start()
    supervisor = crashed(Supervisor(worker, "worker", started_at=0.0))
    said: list[str] = []
    now = 0.5
    delays = []
    for _ in range(7):
        assert not supervisor.check(said.append, now)  # notices the exit
        assert supervisor.restart_at is not None
        delays.append(supervisor.restart_at - now)
        assert not supervisor.check(said.append, supervisor.restart_at - 0.1)
        now = supervisor.restart_at
        assert supervisor.check(said.append, now)  # restarts when due
        crashed(supervisor)
        now += 0.5
    assert delays == [1, 2, 4, 8, 16, 30, 30]

    # Up for as long as the back-off's reset: the next crash waits 1 s again.
    assert not supervisor.check(said.append, now + 30)
    assert supervisor.restart_at == now + 31

    shown = [line.split("  ", 2)[2] for line in said]  # after "  HH:MM:SS  "
    assert shown[0] == "worker exited (exit code 3); restarting in 1 s (restart 1)"
    assert shown[1].startswith("worker restarted, pid ")
    assert shown[-3] == "worker exited (exit code 3); restarting in 30 s (restart 7)"
    assert shown[-1] == "worker exited (exit code 3); restarting in 1 s (restart 8)"
    noted = [e for e in json_lines(log) if e["event"] == "service.restarting"]
    assert [(e["exit"], e["restart"], e["delay_s"]) for e in noted[:3]] == [
        ("exit code 3", 1, 1),
        ("exit code 3", 2, 2),
        ("exit code 3", 3, 4),
    ]


def test_a_stand_in_that_dies_stops_the_local_stack(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    moto = ManagedProcess("moto", ["sh", "-c", "kill -9 $$"], tmp_path / "moto.log").start()
    stack.servers.append(moto)
    assert moto.process is not None
    moto.process.wait()
    with pytest.raises(StandInExited, match=r"stand-in moto exited \(signal 9\).*moto\.log"):
        stack.supervise(print)
