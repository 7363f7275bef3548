"""What the server can be told to do, named without torch: strategies and aggregators.

The server optimizers (`coordinator.round.strategies`, Reddi et al. 2021, arXiv
2003.00295) and the robust aggregators (`coordinator.round.robust_aggregation`) are
torch code; their names, `StrategyConfig` and the default server step live here so
that `coordinator.config`, and with it `fedtype --help`, never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# The names `FederationConfig.aggregator` accepts
# (coordinator.round.robust_aggregation).
AGGREGATORS: tuple[str, ...] = ("mean", "median", "trimmed-mean", "krum", "multi-krum")

STRATEGIES: tuple[str, ...] = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")

# Server learning rates on the grid of Reddi et al. 2021 (powers of 10^0.5 from
# 1e-3 to 10). Their Stack Overflow next-word results favour server_lr = 1 for
# FedAvg and FedAvgM and about 1e-2 for FedAdam and FedYogi; FedAdagrad takes a
# larger step because its v only grows, and 10^-1 is a conservative grid point.
_DEFAULT_SERVER_LR: dict[str, float] = {
    "fedavg": 1.0,
    "fedavgm": 1.0,
    "fedadam": 1e-2,
    "fedyogi": 1e-2,
    "fedadagrad": 1e-1,
}


@dataclass(frozen=True)
class StrategyConfig:
    """Which server optimizer aggregates the rounds, and its settings."""

    # One of STRATEGIES: fedavg | fedavgm | fedadam | fedyogi | fedadagrad.
    name: str = "fedavg"
    # Server step size eta; 1.0 is plain FedAvg. The adaptive strategies need far
    # smaller steps: see `default_server_lr`.
    server_lr: float = 1.0
    # FedAvgM momentum beta (Hsu et al. 2019 use 0.9).
    server_momentum: float = 0.9
    # First-moment decay of FedAdagrad/FedAdam/FedYogi (Reddi et al. 2021: 0.9).
    beta1: float = 0.9
    # Second-moment decay of FedAdam/FedYogi (Reddi et al. 2021: 0.99).
    beta2: float = 0.99
    # Adaptivity tau: the denominator's epsilon and sqrt of v's start value.
    tau: float = 1e-3
    # Aggregations over which server_lr rises linearly to its value (0: none).
    warmup_rounds: int = 0
    # Aggregations over which FedAvgM's momentum rises linearly from 0 to
    # server_momentum (0: none).
    momentum_warmup_rounds: int = 0

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r} (one of {STRATEGIES})")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be positive, got {self.server_lr}")
        for field in ("server_momentum", "beta1", "beta2"):
            value = getattr(self, field)
            if not 0 <= value < 1:
                raise ValueError(f"{field} must lie in [0, 1), got {value}")
        if not self.tau > 0:
            raise ValueError(f"tau must be positive, got {self.tau}")
        for field in ("warmup_rounds", "momentum_warmup_rounds"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")

    def lr_at(self, aggregations: int) -> float:
        """The server step of the aggregation after `aggregations` earlier ones."""
        if self.warmup_rounds == 0:
            return self.server_lr
        return self.server_lr * min(1.0, (aggregations + 1) / self.warmup_rounds)

    def momentum_at(self, aggregations: int) -> float:
        """FedAvgM's beta in the aggregation after `aggregations` earlier ones."""
        if self.momentum_warmup_rounds == 0:
            return self.server_momentum
        ramp = min(1.0, aggregations / self.momentum_warmup_rounds)
        return self.server_momentum * ramp


def default_server_lr(name: str) -> float:
    """A sensible `server_lr` for strategy `name` (see `_DEFAULT_SERVER_LR`)."""
    if name not in _DEFAULT_SERVER_LR:
        raise ValueError(f"unknown strategy {name!r} (one of {STRATEGIES})")
    return _DEFAULT_SERVER_LR[name]
