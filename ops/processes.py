"""Start, watch and stop a set of child processes, each in its own process group.

Each child leads a new session (``start_new_session``), so Ctrl-C in a terminal reaches only the
supervising process, which then stops the children in reverse start order: SIGTERM to the group leader
(uvicorn, Celery and localnet shut down cleanly on it), then SIGTERM to whatever is left of the group
(e.g. Celery's pool processes), then SIGKILL. A group is gone when ``killpg(pgid, 0)`` finds no process,
so no grandchild is left holding a port (zombies waiting for init to reap them hold nothing and
do not count). On Linux each child also gets PR_SET_PDEATHSIG, so even a
SIGKILLed supervisor does not leave its direct children running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies waiting for init to reap them do not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a recycled id owned by someone else
        return True
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux: trust killpg
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


@dataclass
class Child:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen
    expected_exit: bool = False  # one-shot commands and simulators may finish on their own

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Supervisor:
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, command: list[str], *, env: dict, cwd: Path, expected_exit: bool = False) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(  # noqa: S603 (our own commands, no shell)
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        child = Child(name=name, command=command, log_path=log_path, process=process, expected_exit=expected_exit)
        self.children.append(child)
        return child

    def wait_until(self, child: Child, ready: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> None:
        """Poll ``ready`` until it answers True; raise if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise ChildFailed(child, f"exited with code {child.process.returncode} while starting")
            try:
                if ready():
                    return
            except Exception:  # noqa: S110 (not up yet: connection refused, 503, ...)
                pass
            time.sleep(interval)
        raise ChildFailed(child, f"was not ready within {timeout:.0f} s")

    def run(self, name: str, command: list[str], *, env: dict, cwd: Path, timeout: float) -> Child:
        """A one-shot command in its own group (so an interrupt stops it too); raise unless it exits 0."""
        child = self.start(name, command, env=env, cwd=cwd, expected_exit=True)
        try:
            child.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ChildFailed(child, f"did not finish within {timeout:.0f} s") from None
        if child.process.returncode != 0:
            raise ChildFailed(child, f"exited with code {child.process.returncode}")
        return child

    def dead(self) -> list[Child]:
        """Children that exited although they should still run."""
        return [c for c in self.children if not c.expected_exit and c.process.poll() is not None]

    def stop_all(self, *, grace: float = 15.0, settle: float = 5.0) -> list[Child]:
        """Stop every child, newest first; returns the children whose group had to be killed."""
        killed = []
        for child in reversed(self.children):
            if not stop_group(child.process, grace=grace, settle=settle):
                killed.append(child)
        return killed


def stop_group(process: subprocess.Popen, *, grace: float, settle: float = 5.0) -> bool:
    """Stop ``process`` and everything in its group; True when it ended without SIGKILL.

    ``grace``: how long the leader may take after SIGTERM; ``settle``: how long the rest of the group may
    take after each group-wide signal.
    """
    pgid = process.pid
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    clean = process.poll() is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_alive(pgid):
            break
        if sig == signal.SIGKILL:
            clean = False
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + settle
        while group_alive(pgid) and time.monotonic() < deadline:
            if process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
            else:
                time.sleep(0.1)
    process.poll()
    return clean


class ChildFailed(Exception):
    def __init__(self, child: Child, problem: str) -> None:
        self.child = child
        super().__init__(f"{child.name} {problem}. Last lines of {child.log_path}:\n{child.log_tail()}")
