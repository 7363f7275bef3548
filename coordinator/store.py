"""A federated run on disk: what each round saves and what resuming reads back.

Beside the `models.rundir.RunDir` layout a federated run keeps

    checkpoints/server_000042.safetensors   the server optimizer's buffers

(and `phones/`, the histories of phones that joined: `coordinator.joined`).

A round is saved in this order, every file atomically: the global model, the
server state, the metrics line, then state.json, then old files are pruned. A kill
at any moment therefore leaves state.json naming a round whose model and server
state exist; resuming drops any metrics line past it and replays from there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from coordinator.strategies import StrategyState, state_from_tensors, state_to_tensors
from corpora.tokenizer import WordTokenizer
from device_sim.phone import Parameters, load_parameters
from models.checkpoint import atomic_path, load_checkpoint, save_checkpoint
from models.model import NextWordModel
from models.rundir import RunDir, RunDirError


@dataclass(frozen=True)
class Totals:
    """Running sums across rounds and resumes (state.json)."""

    tokens_total: int = 0
    bytes_total: int = 0
    wall_seconds_total: float = 0.0


def server_state_path(run: RunDir, server_round: int) -> Path:
    """Where the server optimizer's buffers after `server_round` are kept."""
    return run.checkpoint_dir / f"server_{server_round:06d}.safetensors"


def save_global(
    run: RunDir,
    server_round: int,
    scratch: NextWordModel,
    parameters: Parameters,
    tokenizer: WordTokenizer,
) -> None:
    """The global model after `server_round` as a loadable checkpoint."""
    load_parameters(scratch, parameters)
    save_checkpoint(
        run.checkpoint_path(server_round),
        scratch,
        scratch.config,
        vocab_fingerprint=tokenizer.fingerprint(),
        extra={"server_round": str(server_round), "kind": "federated"},
    )


def save_server_state(run: RunDir, server_round: int, state: StrategyState) -> None:
    """The strategy's buffers, atomically."""
    path = server_state_path(run, server_round)
    temporary = atomic_path(path)
    save_file(
        state_to_tensors(state),
        str(temporary),
        metadata={"strategy_round": str(state.server_round)},
    )
    os.replace(temporary, path)


def load_server_state(run: RunDir, server_round: int) -> StrategyState:
    """The strategy's buffers saved after `server_round`."""
    path = server_state_path(run, server_round)
    try:
        with safe_open(str(path), framework="pt") as handle:
            strategy_round = int((handle.metadata() or {})["strategy_round"])
        return state_from_tensors(load_file(str(path)), strategy_round)
    except FileNotFoundError:
        raise RunDirError(
            f"{path}: missing; cannot resume round {server_round}"
        ) from None
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise RunDirError(f"{path}: unreadable server state ({error})") from None


def load_global(run: RunDir, server_round: int, tokenizer: WordTokenizer) -> Parameters:
    """The global model's parameters saved after `server_round`."""
    path = run.checkpoint_path(server_round)
    if not path.exists():
        raise RunDirError(f"{path}: missing; cannot resume round {server_round}")
    model, _, _ = load_checkpoint(path, vocab_fingerprint=tokenizer.fingerprint())
    return [p.detach().clone() for p in model.parameters()]


def write_progress(
    run: RunDir, *, server_round: int, clock: float, totals: Totals
) -> None:
    """state.json: the last completed round, the clock and the running totals."""
    run.write_state(
        {
            "server_round": server_round,
            "clock": clock,
            "tokens_total": totals.tokens_total,
            "bytes_total": totals.bytes_total,
            "wall_seconds_total": totals.wall_seconds_total,
        }
    )


def read_progress(run: RunDir) -> tuple[int, float | None, Totals]:
    """The last completed round, its clock (None before round 0 was saved), totals."""
    state = run.read_state()
    if state is None:
        return 0, None, Totals()
    try:
        totals = Totals(
            int(state["tokens_total"]),
            int(state["bytes_total"]),
            float(state["wall_seconds_total"]),
        )
        return int(state["server_round"]), float(state["clock"]), totals
    except (KeyError, TypeError, ValueError) as error:
        raise RunDirError(
            f"{run.state_path}: not a federated state ({error})"
        ) from None


def prune(run: RunDir, *, keep_last: int, keep_every: int) -> None:
    """Old global models (RunDir's rule) and all but the last server states."""
    run.prune_checkpoints(keep_last=keep_last, keep_every=keep_every)
    states = sorted(run.checkpoint_dir.glob("server_*.safetensors"))
    for path in states[:-keep_last]:
        path.unlink(missing_ok=True)
