"""Server-side aggregation strategies: pure functions of client updates.

Every strategy first forms the example-weighted mean of the client updates,

    Delta = sum_i n_i * update_i / sum_i n_i,   update_i = local_i - global,

and then takes one server optimizer step on the global parameters x with the
pseudo-gradient Delta (a descent direction, so every step *adds* to x):

- FedAvg (McMahan et al. 2017, arXiv 1602.05629): x + server_lr * Delta. With
  server_lr = 1 the new model is the weighted average of the client models.
- FedAvgM (Hsu et al. 2019, arXiv 1909.06335): m = beta * m + Delta;
  x + server_lr * m.
- FedAdagrad, FedAdam, FedYogi (Reddi et al. 2021, "Adaptive Federated
  Optimization", arXiv 2003.00295, Algorithm 2):
  m = beta1 * m + (1 - beta1) * Delta, then the second moment
  Adagrad: v = v + Delta^2
  Adam:    v = beta2 * v + (1 - beta2) * Delta^2
  Yogi:    v = v - (1 - beta2) * Delta^2 * sign(v - Delta^2)
  and x + server_lr * m / (sqrt(v) + tau). As in the paper there is no bias
  correction; the moments start at m = 0 and v = tau^2.

Server warm-up (`StrategyConfig.warmup_rounds` = K > 0): the k-th aggregation
(k = 1, 2, ...) steps with server_lr * min(1, k / K), the linear warm-up of Goyal et
al. 2017 (arXiv 1706.02677) on the server's step. It damps the first steps, which
with a few small, divergent cohorts and FedAvgM's momentum can overshoot; the
buffers are updated as without it.

FedProx (Li et al. 2020) changes only the clients' objective
(`TrainingConfig.prox_mu` in `models.training`); on the server it is FedAvg.

The functions here do no I/O and keep no globals: they take parameters, results
and a `StrategyState` and return new ones, leaving their inputs untouched.
Tensors keep the dtype and device of the global parameters (float32 in fedtype);
the weighted mean alone is accumulated in float64 so that it does not depend on
rounding in the order clients report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from coordinator.round.robust_aggregation import weighted_mean
from coordinator.round.server_choices import STRATEGIES as STRATEGIES
from coordinator.round.server_choices import StrategyConfig as StrategyConfig
from coordinator.round.server_choices import default_server_lr as default_server_lr
from models.weights import Parameters, check_like

# Float tensors in `model.parameters()` order.


@dataclass(frozen=True, eq=False)
class StrategyState:
    """What a strategy carries from one aggregation to the next."""

    # Aggregations applied so far (abandoned rounds apply none, so this trails
    # `ServerState.server_round`, the rounds run).
    steps: int
    # Per-parameter buffers: {} (FedAvg), {"momentum": ...} (FedAvgM) or
    # {"m": ..., "v": ...} (adaptive), each a tuple in parameter order.
    buffers: dict[str, tuple[torch.Tensor, ...]]


@torch.no_grad()
def initial_state(config: StrategyConfig, parameters: Parameters) -> StrategyState:
    """The state before the first round: m = 0 and v = tau^2 (Reddi et al. 2021)."""
    names = config.optimizer.buffers
    buffers: dict[str, tuple[torch.Tensor, ...]] = {}
    for name in names:
        if name == "v":
            buffers[name] = tuple(torch.full_like(p, config.tau**2) for p in parameters)
        else:
            buffers[name] = tuple(torch.zeros_like(p) for p in parameters)
    return StrategyState(steps=0, buffers=buffers)


# A server step: (config, parameters, Delta, buffers) -> (parameters, buffers).
_Buffers = dict[str, tuple[torch.Tensor, ...]]
_Step = Callable[
    [StrategyConfig, Parameters, Parameters, _Buffers], tuple[Parameters, _Buffers]
]


def _fedavg_step(
    config: StrategyConfig, parameters: Parameters, delta: Parameters, buffers: _Buffers
) -> tuple[Parameters, _Buffers]:
    lr = config.step_size
    pairs = zip(parameters, delta, strict=True)
    return [torch.add(x, d, alpha=lr) for x, d in pairs], {}


def _fedavgm_step(
    config: StrategyConfig, parameters: Parameters, delta: Parameters, buffers: _Buffers
) -> tuple[Parameters, _Buffers]:
    beta, lr = config.server_momentum, config.step_size
    pairs = zip(delta, buffers["momentum"], strict=True)
    momentum = [torch.add(d, m, alpha=beta) for d, m in pairs]
    pairs = zip(parameters, momentum, strict=True)
    new = [torch.add(x, m, alpha=lr) for x, m in pairs]
    return new, {"momentum": tuple(momentum)}


def _second_moment(
    name: str, v: torch.Tensor, delta: torch.Tensor, beta2: float
) -> torch.Tensor:
    """The new v of FedAdagrad, FedAdam or FedYogi (a new tensor)."""
    if name == "fedadagrad":
        return v.addcmul(delta, delta)
    if name == "fedadam":
        return v.mul(beta2).addcmul_(delta, delta, value=1 - beta2)
    squared = delta * delta
    return v.addcmul(squared, torch.sign(v - squared), value=-(1 - beta2))


def _adaptive_step(
    config: StrategyConfig, parameters: Parameters, delta: Parameters, buffers: _Buffers
) -> tuple[Parameters, _Buffers]:
    b1, lr, tau = config.beta1, config.step_size, config.tau
    m_new: Parameters = []
    v_new: Parameters = []
    new: Parameters = []
    for x, d, m, v in zip(parameters, delta, buffers["m"], buffers["v"], strict=True):
        m_new.append(m.mul(b1).add_(d, alpha=1 - b1))
        v_new.append(_second_moment(config.name, v, d, config.beta2))
        new.append(x.addcdiv(m_new[-1], v_new[-1].sqrt().add_(tau), value=lr))
    return new, {"m": tuple(m_new), "v": tuple(v_new)}


# The step functions, by `ServerOptimizer.step` (`SERVER_OPTIMIZERS` says which
# strategy steps with which).
_STEPS: dict[str, _Step] = {
    "sgd": _fedavg_step,
    "momentum": _fedavgm_step,
    "adaptive": _adaptive_step,
}


def _check_state(
    config: StrategyConfig, parameters: Parameters, state: StrategyState
) -> None:
    expected = config.optimizer.buffers
    if sorted(state.buffers) != sorted(expected):
        raise ValueError(
            f"state holds buffers {sorted(state.buffers)} but {config.name} "
            f"needs {sorted(expected)}"
        )
    for name in expected:
        check_like(parameters, state.buffers[name], f"buffer {name!r}")


@torch.no_grad()
def server_step(
    config: StrategyConfig,
    parameters: Parameters,
    delta: Parameters,
    state: StrategyState,
) -> tuple[Parameters, StrategyState]:
    """One server optimizer step with the pseudo-gradient `delta`.

    Args:
        config: the strategy and its settings.
        parameters: the global parameters the clients started from.
        delta: the round's aggregate of the clients' updates (for FedAvg and its
            server optimizers the example-weighted mean; a robust aggregator's
            output otherwise), in `parameters`' shapes.
        state: the strategy's state after the previous round.

    Returns:
        New parameters and a new state with `steps` one higher; neither
        shares storage with the inputs, which are left unchanged.

    Raises:
        ValueError: tensors that do not match `parameters`, or a state made for
            another strategy.
    """
    _check_state(config, parameters, state)
    delta = [d.to(p.dtype) for d, p in zip(delta, parameters, strict=True)]
    check_like(parameters, delta, "delta")
    stepped = replace(
        config,
        server_lr=config.lr_at(state.steps),
        server_momentum=config.momentum_at(state.steps),
    )
    new_parameters, buffers = _STEPS[config.optimizer.step](
        stepped, list(parameters), delta, state.buffers
    )
    return new_parameters, StrategyState(state.steps + 1, buffers)


@torch.no_grad()
def aggregate(
    config: StrategyConfig,
    parameters: Parameters,
    results: Sequence[tuple[Parameters, int]],
    state: StrategyState,
) -> tuple[Parameters, StrategyState]:
    """One server step from the round's `(update, num_examples)` results.

    The example-weighted mean of the updates (`weighted_mean`), then
    `server_step`; see there for the arguments and results.

    Raises:
        ValueError: no results, a count that is not positive, tensors that do
            not match `parameters`, or a state made for another strategy.
    """
    if not results:
        raise ValueError("nothing to aggregate: no results")
    check_like(parameters, results[0][0], "update")
    _check_state(config, parameters, state)
    delta = weighted_mean([u for u, _ in results], [n for _, n in results])
    return server_step(config, parameters, delta, state)


def state_to_tensors(state: StrategyState) -> dict[str, torch.Tensor]:
    """The buffers as flat, contiguous copies named "<buffer>.<index>" ("m.3")."""
    return {
        f"{name}.{i}": t.detach().contiguous().clone()
        for name, tensors in state.buffers.items()
        for i, t in enumerate(tensors)
    }


def state_from_tensors(tensors: dict[str, torch.Tensor], steps: int) -> StrategyState:
    """The state `state_to_tensors` flattened, with copies of `tensors`.

    Raises:
        ValueError: a name not of the form "<buffer>.<index>", indices of a
            buffer that are not 0..n-1, or a negative `steps`.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    indexed: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, _, index = key.rpartition(".")
        if not name or not index.isdigit():
            raise ValueError(f"state tensor name {key!r} is not '<buffer>.<index>'")
        indexed.setdefault(name, {})[int(index)] = tensor
    buffers: dict[str, tuple[torch.Tensor, ...]] = {}
    for name, by_index in indexed.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"buffer {name!r} has indices {sorted(by_index)}")
        buffers[name] = tuple(by_index[i].clone() for i in range(len(by_index)))
    return StrategyState(steps=steps, buffers=buffers)
