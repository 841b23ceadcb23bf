"""One writer per store: a lock file beside the store that names its holder.

Every command that writes a store (``cdw ed-quench``, ``cdw quench``, ``cdw ed-dataset``,
``cdw gc-dataset``, ``cdw analyze``; also with ``--resume`` or ``--overwrite``) holds the lock of
its output for as long as it runs. A second writer of the same store stops at once with
:class:`~cdwdata.errors.StoreBusyError`, one line naming the holder (host, PID, start time,
command); the CLI turns it into exit code 2. Readers (``cdw info``, ``cdw verify``, the
catalog, ``xr.open_zarr``) never take the lock.

Files, beside the store ``runs/q.zarr`` (so ``--overwrite`` can replace the store itself):

* ``runs/.q.zarr.lock``: the lock file, held with an OS lock (:mod:`filelock`: ``flock`` on
  Unix); the operating system releases it when the holder dies, however it dies (SIGKILL,
  out of memory, a node reboot);
* ``runs/.q.zarr.writer.json``: the holder's record (host, PID, process start time, lock
  start time, command), removed on a clean exit and refreshed every :data:`HEARTBEAT_S`
  seconds while held.

A record left by a process that no longer runs (a kill) is stale: the next writer takes the
lock over and says so on stderr. On the same host "no longer runs" is checked exactly (the PID
is gone, or belongs to a process started at another time).

Shared cluster filesystems
--------------------------
With Dask, only the coordinating process (where ``cdw`` runs) holds the lock; workers, on
this or other nodes, write only the chunks of the runs they were given and never touch
metadata. What is guaranteed for two coordinating processes on different nodes depends on the
filesystem:

* where ``flock`` is coherent across nodes (NFSv4, GPFS/Spectrum Scale, Lustre mounted with
  ``flock``, CephFS), the OS lock excludes the second writer exactly as on one machine;
* where it is only node-local (Lustre ``localflock``, some NFSv3 setups) or missing (then
  :mod:`filelock` falls back to an exclusive-create lock file), the record is the guard: a
  record of another host refreshed less than :data:`STALE_AFTER_S` seconds ago refuses the
  second writer. This relies on clocks agreeing to well within a minute (NTP), and a
  writer that stops refreshing for that long (a suspended job) loses its claim.

Nothing here protects against a process that writes a store without taking the lock (an
older cdwdata, or your own zarr code).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import inspect
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cdwdata.errors import StoreBusyError

#: Seconds between refreshes of the holder's record.
HEARTBEAT_S = 10.0
#: A record of another host not refreshed for this long belongs to a writer that is gone.
STALE_AFTER_S = 60.0

log = logging.getLogger(__name__)


def lock_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(lock file, holder record) of the store at ``path``: hidden siblings of the store."""
    p = Path(os.path.abspath(path))
    return p.with_name(f".{p.name}.lock"), p.with_name(f".{p.name}.writer.json")


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # no such process, or no permission to look
        return None


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) the lock of a store."""

    host: str
    pid: int
    started: str
    process_start: float | None = None
    command: str = ""
    token: str = ""

    @classmethod
    def me(cls, command: str | None) -> Holder:
        return cls(host=socket.gethostname(), pid=os.getpid(),
                   started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   process_start=_process_start(os.getpid()), command=command or "",
                   token=secrets.token_hex(8))

    def describe(self) -> str:
        what = f" ({self.command})" if self.command else ""
        return f"PID {self.pid} on {self.host} since {self.started}{what}"

    def running_here(self) -> bool | None:
        """True/False if this host can tell whether the holder still runs; None for another
        host."""
        if self.host != socket.gethostname():
            return None
        start = _process_start(self.pid)
        if start is None:
            return False
        return self.process_start is None or abs(start - self.process_start) < 1.0


def read_holder(path: str | os.PathLike) -> Holder | None:
    """The record of the store's current (or last, if it died) writer, or None."""
    record = lock_files(path)[1]
    try:
        data = json.loads(record.read_text())
        return Holder(**{k: data[k] for k in Holder.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _record_age(path) -> float | None:
    try:
        return time.time() - lock_files(path)[1].stat().st_mtime
    except OSError:
        return None


class StoreLock:
    """The writer lock of one store (see the module docstring); a context manager.

    Parameters
    ----------
    path : path of the store (it need not exist yet; its folder must).
    command : the command line recorded for other writers to see.
    """

    def __init__(self, path: str | os.PathLike, command: str | None = None) -> None:
        import filelock

        self.path = Path(path)
        self.lock_file, self.record = lock_files(path)
        self.command = command
        self._lock = filelock.FileLock(str(self.lock_file), timeout=0)
        self._holder: Holder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _busy(self, holder: Holder | None, detail: str = "") -> StoreBusyError:
        who = holder.describe() if holder else "another process (its record is not written yet)"
        return StoreBusyError(f"{self.path} is being written by {who}{detail}; only one writer "
                              "may write a store at a time: wait for it to finish or stop it")

    def acquire(self) -> StoreLock:
        import filelock

        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise self._busy(read_holder(self.path)) from None
        try:
            self._claim()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _claim(self) -> None:
        old = read_holder(self.path)
        if old is not None:
            here = old.running_here()
            age = _record_age(self.path)
            if here or (here is None and age is not None and age < STALE_AFTER_S):
                # the OS lock did not see it: a filesystem whose locks are node-local
                raise self._busy(old, f" (its lock record was refreshed {age or 0:.0f} s ago)"
                                 if here is None else "")
            log.warning("%s: taking over the lock left by %s, which is no longer running",
                        self.path, old.describe())
        self._holder = Holder.me(self.command)
        tmp = self.record.with_name(f"{self.record.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self._holder)) + "\n")
        os.replace(tmp, self.record)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="cdw-lock-heartbeat",
                                      daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        import signal

        if hasattr(signal, "pthread_sigmask"):  # Ctrl-C is for the main thread
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.record)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        current = read_holder(self.path)
        if current is not None and self._holder is not None and \
                current.token == self._holder.token:
            with contextlib.suppress(OSError):
                self.record.unlink()
        self._holder = None
        self._lock.release()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_held: dict[str, list[Any]] = {}  # resolved store path -> [StoreLock, depth]
_held_guard = threading.Lock()


@contextlib.contextmanager
def writing(path: str | os.PathLike, command: str | None = None) -> Iterator[None]:
    """Hold the writer lock of ``path`` for the ``with`` block.

    Re-entrant within one process (a writer that calls another writer of the same store
    keeps the one lock). Raises :class:`~cdwdata.errors.StoreBusyError` at once if another
    process writes the store.
    """
    key = os.path.abspath(path)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        lock = StoreLock(key, command).acquire()
        with _held_guard:
            _held[key] = entry = [lock, 1]
    try:
        yield
    finally:
        with _held_guard:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                _held.pop(key, None)
        if last:
            entry[0].release()


def writes_store(arg: str = "path", *, also: Callable[[Any], Any] | None = None,
                 command_arg: str | None = "command"):
    """Decorator: hold the writer lock of the store named by argument ``arg`` during the call.

    ``also(path)`` names a second store written by the same call (locked after the first);
    the argument ``command_arg``, if given, is recorded as the holder's command.
    """

    def wrap(func):
        sig = inspect.signature(func)

        @functools.wraps(func)
        def inner(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs)
            path = bound.arguments.get(arg)
            command = bound.arguments.get(command_arg) if command_arg else None
            if path is None:
                return func(*args, **kwargs)
            with contextlib.ExitStack() as stack:
                stack.enter_context(writing(path, command))
                if also is not None:
                    stack.enter_context(writing(also(path), command))
                return func(*args, **kwargs)

        return inner

    return wrap
