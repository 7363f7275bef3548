"""A federated run on disk: what each round saves and what resuming reads back.

Beside the `models.rundir.RunDir` layout a federated run keeps

    checkpoints/server_000042.safetensors   the server optimizer's buffers

(and `phones/`, the histories of phones that joined: `coordinator.run.joined`).

A round is saved in this order, every file atomically: the global model, the
server state, the metrics line, then state.json, then old files are pruned. A kill
at any moment therefore leaves state.json naming a round whose model and server
state exist; resuming drops any metrics line past it and replays from there.

What a kill or a damaged disk can still leave, `coordinator.run.repair` mends before
a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from coordinator.round.robust import ScreenHistory
from coordinator.round.strategies import (
    StrategyState,
    state_from_tensors,
    state_to_tensors,
)
from corpora.tokenizer import WordTokenizer
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.files import atomic_write
from models.model import NextWordModel
from models.rundir import RunDir, RunDirError, RunKind
from models.weights import Parameters, load_parameters

if TYPE_CHECKING:
    from coordinator.config import FederationConfig
    from coordinator.round.rounds import ServerState


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
        extra={"server_round": str(server_round), "kind": RunKind.FEDERATED.value},
    )


def save_server_state(run: RunDir, server_round: int, state: StrategyState) -> None:
    """The strategy's buffers, atomically."""
    path = server_state_path(run, server_round)
    tensors = state_to_tensors(state)
    metadata = {"strategy_round": str(state.steps)}
    atomic_write(path, lambda out: save_file(tensors, str(out), metadata=metadata))


def load_server_state(run: RunDir, server_round: int) -> StrategyState:
    """The strategy's buffers saved after `server_round`."""
    path = server_state_path(run, server_round)
    try:
        with safe_open(str(path), framework="pt") as handle:
            strategy_round = int((handle.metadata() or {})["strategy_round"])
        tensors = load_file(str(path))
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise RunDirError(
                    f"{path}: buffer {name} holds non-finite values (NaN or Inf)"
                )
        return state_from_tensors(tensors, strategy_round)
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
    try:
        model, _, _ = load_checkpoint(path, vocab_fingerprint=tokenizer.fingerprint())
    except CheckpointError as error:
        raise RunDirError(str(error)) from None
    return [p.detach().clone() for p in model.parameters()]


def write_progress(
    run: RunDir,
    *,
    server_round: int,
    clock: float,
    totals: Totals,
    screen: ScreenHistory | None = None,
    privacy: dict[str, Any] | None = None,
) -> None:
    """state.json: the last completed round, the clock, the running totals and
    the update screen's memory (so that a resume screens as the run would have),
    and the privacy state (the accountant's rounds: epsilon never resets)."""
    state: dict[str, Any] = {
        "server_round": server_round,
        "clock": clock,
        "tokens_total": totals.tokens_total,
        "bytes_total": totals.bytes_total,
        "wall_seconds_total": totals.wall_seconds_total,
    }
    if screen is not None:
        state["screen"] = screen.to_dict()
    if privacy is not None:
        state["privacy"] = privacy
    run.write_state(state)


def read_privacy_state(run: RunDir) -> dict[str, Any] | None:
    """The privacy state saved with the last round (None when none was)."""
    state = run.read_state() or {}
    privacy = state.get("privacy")
    if privacy is not None and not isinstance(privacy, dict):
        raise RunDirError(f"{run.state_path}: bad 'privacy' ({privacy!r})")
    return privacy


def read_screen_history(run: RunDir) -> ScreenHistory:
    """The screen's memory saved with the last round (empty when none was)."""
    state = run.read_state() or {}
    try:
        return ScreenHistory.from_dict(state.get("screen"))
    except (TypeError, ValueError, AttributeError) as error:
        raise RunDirError(f"{run.state_path}: bad 'screen' ({error})") from None


def read_progress(run: RunDir) -> tuple[int, float | None, Totals]:
    """The last completed round, its clock (None before round 0 was saved), totals."""
    state = run.read_state()
    if state is None:
        saved = [step for step in run.checkpoint_steps() if step > 0]
        if saved or run.read_metrics():
            raise RunDirError(
                f"{run.state_path}: missing, though rounds up to "
                f"{max(saved, default=0)} were saved; `fedtype simulate --resume "
                f"{run.path}` rebuilds it from the checkpoints and metrics"
            )
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


def save_round(
    run: RunDir,
    state: ServerState,
    line: dict[str, Any] | None,
    *,
    totals: Totals,
    federation: FederationConfig,
    scratch: NextWordModel,
    tokenizer: WordTokenizer,
) -> None:
    """Save a round in crash-safe order: model, server state, metrics line,
    state.json, then prune (`line` None: round 0, which has none)."""
    r = state.server_round
    save_global(run, r, scratch, state.parameters, tokenizer)
    save_server_state(run, r, state.strategy)
    if line is not None:
        run.append_metrics(line)
    write_progress(
        run,
        server_round=r,
        clock=state.clock,
        totals=totals,
        screen=state.screen,
        privacy=state.privacy.to_dict(),
    )
    prune(run, keep_last=federation.keep_last, keep_every=federation.checkpoint_every)
