"""Phones trained side by side on long-lived worker processes.

Each worker is a process with one torch thread and its own model instance; on two
cores two such workers train faster than one process whose matrix products are
split over two threads, since this small LSTM's products are too small to split
well (`benchmarks/fleet.py` measures both). A worker trains one phone at a time
with an engine of `ENGINES`, the same code whichever worker it is, so a report
does not depend on which worker made it (bitwise), and the reports come back in
the order of the phones given.

Workers are spawned, not forked (forking a process that runs torch, tokenizer or
UI threads is unsafe), so a script that creates a `ParallelExecutor` must do so
under `if __name__ == "__main__":`, as Python's multiprocessing requires.

Weights go down once per round through a shared-memory file that every worker
maps; each update comes back through a shared slot of its worker, which this
process copies out before it hands the slot to the next phone. Only phones (their
history, a few kilobytes), client ids, counts and metrics travel through pipes.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import traceback
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from corpora.tokenizer import WordTokenizer
from device_sim.batched import BatchedExecutor
from device_sim.config import LocalTrainingConfig
from device_sim.executor import ReportCallback, SerialExecutor
from device_sim.local_eval import EvalCounts
from device_sim.phone import ClientReport, Parameters, Phone
from models.config import ModelConfig
from models.model import NextWordModel

# How a worker trains a phone: the stacked hand-written model (`device_sim.batched`,
# a group of one) or `Phone.train` under autograd, exactly as `SerialExecutor`.
ENGINES: dict[str, type[BatchedExecutor] | type[SerialExecutor]] = {
    "batched": BatchedExecutor,
    "serial": SerialExecutor,
}
# Phones in flight per worker: one training, one queued behind it so that the
# worker never waits for this process to copy out an update.
_SLOTS_PER_WORKER = 2


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def _shared(path: str, numel: int) -> torch.Tensor:
    """A float32 tensor backed by the file `path`, mapped shared."""
    return torch.from_file(path, shared=True, size=numel, dtype=torch.float32)


def _split(flat: torch.Tensor, shapes: Sequence[torch.Size]) -> Parameters:
    """Views of `flat` with the given shapes, in order."""
    sizes = [s.numel() for s in shapes]
    return [t.view(s) for t, s in zip(flat.split(sizes), shapes, strict=True)]


def _fits(update: Parameters, shapes: Sequence[torch.Size]) -> bool:
    """Whether an update has the model's float32 layout (a faulty one may not)."""
    return len(update) == len(shapes) and all(
        t.dtype == torch.float32 and t.shape == s
        for t, s in zip(update, shapes, strict=True)
    )


def _worker(
    conn: Connection,
    path: str,
    worker_id: int,
    workers: int,
    model_config: ModelConfig,
    tokenizer: WordTokenizer,
    local: LocalTrainingConfig,
    fault_kind: str,
    engine: str,
) -> None:
    """A worker's loop: train or evaluate the phones it is sent until told to stop."""
    torch.set_num_threads(1)
    executor = ENGINES[engine](
        model_config=model_config,
        tokenizer=tokenizer,
        local=local,
        fault_kind=fault_kind,
    )
    shapes = [p.shape for p in NextWordModel(model_config).parameters()]
    numel = sum(s.numel() for s in shapes)
    memory = _shared(path, numel * (1 + _SLOTS_PER_WORKER * workers))
    global_parameters = _split(memory[:numel], shapes)
    conn.send(("ready", worker_id))
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        kind, task, slot, args = message
        try:
            if kind == "train":
                (report,) = executor.train([task], global_parameters, **args)
                update: Any = None
                if _fits(report.update, shapes):
                    start = numel * (1 + _SLOTS_PER_WORKER * worker_id + slot)
                    torch.cat(
                        [t.reshape(-1) for t in report.update],
                        out=memory[start : start + numel],
                    )
                else:
                    update = [t.numpy() for t in report.update]
                result: Any = (report.num_examples, report.metrics, update)
            else:
                result = executor.evaluate(
                    [task[0]], global_parameters, **args, keystroke_texts=[task[1]]
                )
            conn.send(("done", result))
        except Exception:  # noqa: BLE001 - the coordinator re-raises it
            conn.send(("error", traceback.format_exc()))


class ParallelExecutor:
    """Phones on `workers` processes (default: one a core), one torch thread each."""

    def __init__(
        self,
        *,
        model_config: ModelConfig,
        tokenizer: WordTokenizer,
        local: LocalTrainingConfig,
        fault_kind: str = "nan",
        workers: int | None = None,
        engine: str = "batched",
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r} (one of {', '.join(ENGINES)})")
        self.workers = workers or default_workers()
        self._shapes = [p.shape for p in NextWordModel(model_config).parameters()]
        self._numel = sum(s.numel() for s in self._shapes)
        handle, self._path = tempfile.mkstemp(prefix="fedtype-", dir=_shm_dir())
        size = self._numel * (1 + _SLOTS_PER_WORKER * self.workers)
        os.ftruncate(handle, size * 4)
        os.close(handle)
        self._memory = _shared(self._path, size)
        # The file goes once every worker has mapped it (or with this object).
        self._unlink = weakref.finalize(self, _remove, self._path)
        self._ready = False
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        for worker_id in range(self.workers):
            ours, theirs = context.Pipe()
            settings = (model_config, tokenizer, local, fault_kind, engine)
            process = context.Process(
                target=_worker,
                args=(theirs, self._path, worker_id, self.workers, *settings),
                daemon=True,
            )
            process.start()
            theirs.close()
            self._conns.append(ours)
            self._processes.append(process)

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (for measuring their memory)."""
        return [p.pid for p in self._processes if p.pid is not None]

    def _wait_ready(self) -> None:
        """Wait for every worker to map the shared memory, then drop its file."""
        if self._ready:
            return
        for worker, conn in enumerate(self._conns):
            try:
                conn.recv()
            except EOFError:
                self.close()
                raise RuntimeError(f"fleet worker {worker} failed to start") from None
        self._unlink()
        self._ready = True

    def _slot(self, worker: int, slot: int) -> torch.Tensor:
        start = self._numel * (1 + _SLOTS_PER_WORKER * worker + slot)
        return self._memory[start : start + self._numel]

    def _run(self, tasks: list[Any], kind: str, args: dict[str, Any]) -> Any:
        """Send each task to a free slot of a worker; yield (index, slot, result).

        A slot is (worker, k): a worker answers its tasks in the order sent, and
        a slot gets its next task only once its result has been taken.
        """
        self._wait_ready()
        pending = deque(range(len(tasks)))
        in_flight: list[deque[tuple[int, int]]] = [deque() for _ in self._conns]

        def dispatch(worker: int, k: int) -> None:
            if pending:
                index = pending.popleft()
                in_flight[worker].append((k, index))
                self._conns[worker].send((kind, tasks[index], k, args))

        for k in range(_SLOTS_PER_WORKER):
            for worker in range(self.workers):
                dispatch(worker, k)
        while any(in_flight):
            ready = wait([c for c, f in zip(self._conns, in_flight, strict=True) if f])
            for worker, conn in enumerate(self._conns):
                if conn not in ready:
                    continue
                try:
                    status, result = conn.recv()
                except EOFError:
                    self.close()
                    raise RuntimeError(f"fleet worker {worker} died") from None
                if status == "error":
                    self.close()
                    raise RuntimeError(f"fleet worker {worker} failed:\n{result}")
                k, index = in_flight[worker].popleft()
                yield index, (worker, k), result
                dispatch(worker, k)

    def train(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        server_round: int,
        on_report: ReportCallback | None = None,
    ) -> list[ClientReport]:
        """Each phone's report, as the engine's executor would give it in-process."""
        flat = torch.cat([t.detach().reshape(-1) for t in global_parameters])
        self._memory[: self._numel].copy_(flat)
        reports: dict[int, ClientReport] = {}
        runs = self._run(list(phones), "train", {"server_round": server_round})
        for index, slot, (examples, metrics, update) in runs:
            if update is None:
                update = _split(self._slot(*slot).clone(), self._shapes)
            else:
                update = [torch.from_numpy(a) for a in update]
            report = ClientReport(phones[index].client_id, update, examples, metrics)
            reports[index] = report
            if on_report is not None:
                on_report(report)
        return [reports[i] for i in range(len(phones))]

    def evaluate(
        self,
        phones: Sequence[Phone],
        global_parameters: Parameters,
        *,
        max_messages: int,
        keystroke_texts: Sequence[int],
    ) -> list[tuple[str, EvalCounts]]:
        """`(client_id, counts)` of each phone with future text, in phone order."""
        flat = torch.cat([t.detach().reshape(-1) for t in global_parameters])
        self._memory[: self._numel].copy_(flat)
        tasks = list(zip(phones, keystroke_texts, strict=True))
        results: dict[int, list[tuple[str, EvalCounts]]] = {}
        runs = self._run(tasks, "evaluate", {"max_messages": max_messages})
        for index, _, result in runs:
            results[index] = result
        return [pair for i in range(len(tasks)) for pair in results[i]]

    def close(self) -> None:
        """Stop the workers and remove the shared memory."""
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        for conn in self._conns:
            conn.close()
        self._conns, self._processes = [], []
        self._unlink()


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def _shm_dir() -> str | None:
    """/dev/shm when there is one (memory-backed), else the temporary directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None
