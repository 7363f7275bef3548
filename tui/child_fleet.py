"""`DemoFleet` whose simulation lives in a child process, so rounds never compete
with typing for the interpreter lock, and quitting never waits for a round.

The child resumes the run from its directory and serves requests from a pipe:
rounds one after another on one thread, everything else (this phone's messages,
its fine-tuning, a phone's facts) on threads of their own, so a message is stored
at once even while a round trains. The parent reads what is on disk itself: the
metrics lines, the tokenizer and every kept global model. Killing the child at any
moment is safe: a run directory is written file by file, atomically.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coordinator.run import store
from coordinator.run.repair import repair_for_resume
from corpora.corpus import CorpusSplits, load_corpus
from device_sim.memory import MemoryMixture, PhoneMemory
from device_sim.memory_config import Mixing
from models.config import ModelConfig
from models.model import NextWordModel
from models.run_lock import RunLock, lock_run
from models.rundir import RunDir, RunDirError, RunKind
from tui.fleet import PhoneFacts
from tui.live_central import (
    CentralView,
    central_path,
    open_live_central,
    read_central,
    unigram_view,
    write_fleet_unigram,
)
from tui.sim_fleet import this_phone_messages

# Seconds the child may take to load the corpus and resume the run.
START_TIMEOUT_S = 300.0
# Seconds `close` waits for the child to stop by itself before killing it (safe:
# the run directory is consistent at every moment).
CLOSE_GRACE_S = 0.3


class TrainerError(RuntimeError):
    """The child process failed a request or stopped; the message says why."""


# A model as it crosses the pipe: its ModelConfig as a dict, and its weights.
# A model over the pipe: its shape, its weights and, for a phone's personal
# model, its memory (keys, values, previous) and mixing.
ModelPayload = tuple[
    dict[str, Any],
    dict[str, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]] | None,
]


def _model_payload(model: nn.Module) -> ModelPayload:
    memory = None
    if isinstance(model, MemoryMixture):
        held = model.memory
        memory = (held.keys, held.values, held.previous, asdict(model.mixing))
        model = model.model
    assert isinstance(model, NextWordModel)
    tensors = {k: v.detach() for k, v in model.state_dict().items()}
    return asdict(model.config), tensors, memory


def _model_from(payload: ModelPayload) -> nn.Module:
    config, tensors, memory = payload
    model = NextWordModel(ModelConfig(**config))
    model.load_state_dict(tensors)
    if memory is None:
        return model.eval()
    keys, values, previous, mixing = memory
    return MemoryMixture(
        model=model,
        memory=PhoneMemory(keys, values, previous),
        mixing=Mixing(**mixing),
    ).eval()


def _handle(fleet: Any, method: str, args: tuple[Any, ...]) -> Any:
    """Run one request against the child's `SimulationFleet`."""
    if method == "round":
        return fleet.run_round()
    if method == "personalize":
        result = fleet.personalize()
        if result is None:
            return None
        model, server_round, count = result
        return _model_payload(model), server_round, count
    if method in ("send", "phone_ids", "phone_facts"):
        return getattr(fleet, method)(*args)
    raise TrainerError(f"unknown request {method!r}")


def serve(
    conn: Connection,
    run_dir: str,
    splits: CorpusSplits | None,
    log: str,
    live_central: bool = True,
) -> None:
    """The child process: resume the run and answer requests until told to stop.

    With `live_central`, the run's live central baseline (if it has one) trains
    after each round, on the rounds' thread.
    """
    _step_aside(log)
    from coordinator.run.simulation import Simulation
    from tui.sim_fleet import SimulationFleet

    send_lock = threading.Lock()

    def reply(request_id: int, ok: bool, payload: Any) -> None:
        with send_lock:
            conn.send((request_id, ok, payload))

    def run(request_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            reply(request_id, True, _handle(fleet, method, args))
        except Exception as error:  # sent back to the parent, which shows it
            reply(request_id, False, f"{type(error).__name__}: {error}")

    try:
        # The child writes the run: it holds the write lock until it exits.
        lock = lock_run(run_dir)  # noqa: F841 (released when the process exits)
        simulation = Simulation.resume(run_dir, splits=splits)
        central = _open_central(run_dir, splits) if live_central else None
        fleet = SimulationFleet(simulation, central=central)
        if not live_central:
            _measure_unigram_aside(run_dir, splits)
    except Exception as error:  # the parent turns this into the "cannot open" screen
        reply(0, False, f"{error}")
        return
    reply(0, True, fleet.server_round)  # request 0: the parent waits for this
    _answer_until_closed(conn, run)
    fleet.close()
    # A round may still run on its thread: leave at once, without unwinding it
    # (the run directory is consistent at every moment).
    os._exit(0)


def _measure_unigram_aside(run_dir: str, splits: CorpusSplits | None) -> None:
    """The unigram level of a run without a live baseline, measured on a thread
    (the dashboard shows it from the next round on)."""
    threading.Thread(
        target=write_fleet_unigram, args=(run_dir, splits), daemon=True
    ).start()


def _step_aside(log: str) -> None:
    """Keep the child off the parent's screen and out of the keyboard's way."""
    # Anything the child prints would tear the parent's screen: it goes to a log,
    # at the descriptor level too, where torch's C++ runtime writes.
    sys.stdout = sys.stderr = open(log, "a", buffering=1, encoding="utf-8")
    os.dup2(sys.stderr.fileno(), 1)
    os.dup2(sys.stderr.fileno(), 2)
    torch.set_num_threads(1)
    # Training yields the CPU to the keyboard, as a phone trains only when idle.
    os.nice(10)


def _answer_until_closed(
    conn: Connection, run: Callable[[int, str, tuple[Any, ...]], None]
) -> None:
    """Run each request on a thread of its own until the parent closes the pipe
    or asks to close; rounds run one at a time, in request order."""
    round_lock = threading.Lock()
    while True:
        try:
            request_id, method, args = conn.recv()
        except (EOFError, OSError):
            return
        if method == "close":
            return
        target = _locked(round_lock, run) if method == "round" else run
        thread = threading.Thread(target=target, args=(request_id, method, args))
        thread.daemon = True
        thread.start()


def _open_central(run_dir: str, splits: CorpusSplits | None) -> Any:
    if not (central_path(run_dir) / "config.json").exists():
        return None
    if splits is None:
        splits = load_corpus(RunDir(run_dir).corpus_config())
    return open_live_central(run_dir, splits)


def _locked(lock: threading.Lock, function: Any) -> Any:
    def call(*args: Any) -> None:
        with lock:
            function(*args)

    return call


def repair_run(run: RunDir) -> tuple[str, ...]:
    """Mend what a kill or a damaged disk left, as `fedtype simulate --resume`
    does (`coordinator.run.repair.repair_for_resume`); what was done, in sentences.

    The write lock is held for the repair only; the child takes it for good.

    Raises:
        RunLockError: another process writes the run.
        RunDirError: it cannot be resumed, or it was stopped before round 0 was
            saved.
    """
    with RunLock(run.path):
        repair = repair_for_resume(run)
    if repair.unstarted:
        raise RunDirError(
            f"{run.path}: the run was stopped before round 0 was saved; start it "
            f"again with fedtype simulate --resume {run.path}"
        )
    return repair.notes


@contextmanager
def _real_stdio() -> Iterator[None]:
    """The process's own stdout and stderr for a moment.

    A running Textual app replaces them with objects whose `fileno()` is -1, and
    multiprocessing hands stderr's descriptor to its helper process.
    """
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


class ChildProcessFleet:
    """A `DemoFleet` over a run directory whose simulation runs in a child process."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        name: str | None = None,
        splits: CorpusSplits | None = None,
        live_central: bool = True,
    ) -> None:
        """Check the run, start the child and return at once.

        With `live_central` the run's live central baseline (RUN/central, if
        any) trains after each round in the child; without, none trains.

        The keyboard can suggest from the run's last checkpoint while the child
        still loads the corpus; requests wait for it.

        Raises:
            RunDirError: the run directory is not a federated run one can open.
        """
        self.run = RunDir(run_dir)
        self.name = name or str(run_dir)
        self.live_central = live_central
        self.run.config_of(RunKind.FEDERATED)
        self.repair_notes = repair_run(self.run)
        self.tokenizer = self.run.load_tokenizer()
        self._round, _, _ = store.read_progress(self.run)
        self._messages = this_phone_messages(self.run)
        self._ids = itertools.count(1)
        self._opened: Future[Any] = Future()
        self._pending: dict[int, Future[Any]] = {0: self._opened}
        self._lock = threading.Lock()
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        log = str(self.run.path / "trainer.log")
        self._process = context.Process(
            target=serve,
            args=(child_conn, str(run_dir), splits, log, live_central),
            daemon=True,
        )
        with _real_stdio():
            self._process.start()
        child_conn.close()
        threading.Thread(target=self._read_replies, daemon=True).start()

    def wait_until_open(self, timeout: float | None = START_TIMEOUT_S) -> None:
        """Block until the child has resumed the run (TrainerError if it failed)."""
        try:
            self._opened.result(timeout=timeout)
        except TimeoutError:
            raise TrainerError("the training process did not start in time") from None

    def _read_replies(self) -> None:
        while True:
            try:
                request_id, ok, payload = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                future = self._pending.pop(request_id, None)
            if future is not None:
                if ok:
                    future.set_result(payload)
                else:
                    future.set_exception(TrainerError(str(payload)))
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for future in pending:
            if not future.done():
                future.set_exception(TrainerError("the training process stopped"))

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Send one request and wait for its answer (TrainerError on failure)."""
        self.wait_until_open()
        future: Future[Any] = Future()
        with self._lock:
            request_id = next(self._ids)
            self._pending[request_id] = future
            try:
                self._conn.send((request_id, method, args))
            except (OSError, ValueError) as error:
                self._pending.pop(request_id, None)
                raise TrainerError(f"the training process stopped ({error})") from None
        return future.result(timeout=timeout)

    @property
    def server_round(self) -> int:
        return self._round

    def records(self) -> list[dict[str, Any]]:
        return [r for r in self.run.read_metrics() if "server_round" in r]

    def global_snapshot(self) -> nn.Module:
        return self.model_at(self._round)

    def train_round(self) -> tuple[dict[str, Any], nn.Module]:
        record = self._call("round")
        self._round = int(record["server_round"])
        return record, self.model_at(self._round)

    def central_view(self) -> CentralView | None:
        if self.live_central:
            return read_central(self.run.path)
        return unigram_view(self.run.path)

    def model_at(self, server_round: int) -> nn.Module:
        model, _ = self.run.load_model(server_round)
        return model.eval()

    def kept_rounds(self) -> list[int]:
        return self.run.checkpoint_steps()

    def my_messages(self) -> list[str]:
        return list(self._messages)

    def send(self, text: str) -> list[str]:
        try:
            self._call("send", text, timeout=START_TIMEOUT_S)
        except (TrainerError, TimeoutError) as error:
            raise OSError(str(error)) from None
        self._messages.append(text)
        return self.my_messages()

    def personalize(self) -> tuple[nn.Module, int, int] | None:
        result = self._call("personalize")
        if result is None:
            return None
        payload, server_round, count = result
        return _model_from(payload), server_round, count

    def phone_ids(self) -> list[str]:
        return list(self._call("phone_ids"))

    def phone_facts(self, client_id: str) -> PhoneFacts:
        return self._call("phone_facts", client_id)

    def close(self) -> None:
        """Ask the child to stop; kill it if it is inside a round."""
        try:
            self._conn.send((0, "close", ()))
        except (OSError, ValueError):
            pass
        self._process.join(CLOSE_GRACE_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(CLOSE_GRACE_S)
        self._conn.close()
