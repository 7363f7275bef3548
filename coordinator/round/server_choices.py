"""What the server can be told to do, named without torch: strategies and aggregators.

The server optimizers (`coordinator.round.strategies`, Reddi et al. 2021, arXiv
2003.00295) and the robust aggregators (`coordinator.round.robust_aggregation`) are
torch code; their names, their configs and the default server step live here so
that `coordinator.config`, and with it `fedtype --help`, never import torch.
`SERVER_OPTIMIZERS` is the one table a new strategy is added to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coordinator.errors import FederationConfigError
from models.settings import check_settings, setting

# The names `AggregationConfig.name` accepts (coordinator.round.robust_aggregation).
AGGREGATORS: tuple[str, ...] = ("mean", "median", "trimmed-mean", "krum", "multi-krum")

# The largest server_lr accepted: FedAvg's is 1.0 and the adaptive strategies'
# 0.01; a far larger step only throws the model to NaN.
MAX_SERVER_LR = 100.0


@dataclass(frozen=True)
class ServerOptimizer:
    """What `coordinator.round.strategies` needs to know of one server optimizer."""

    # Its server_lr when the run gives none.
    default_server_lr: float
    # The buffers it keeps between rounds, in the order they are stored.
    buffers: tuple[str, ...]
    # Its step function's key in `coordinator.round.strategies._STEPS`.
    step: str


# Every strategy, by name. Server learning rates on the grid of Reddi et al.
# 2021 (powers of 10^0.5 from 1e-3 to 10): their Stack Overflow next-word
# results favour server_lr = 1 for FedAvg and FedAvgM and about 1e-2 for FedAdam
# and FedYogi; FedAdagrad takes a larger step because its v only grows, and
# 10^-1 is a conservative grid point.
SERVER_OPTIMIZERS: dict[str, ServerOptimizer] = {
    "fedavg": ServerOptimizer(default_server_lr=1.0, buffers=(), step="sgd"),
    "fedavgm": ServerOptimizer(
        default_server_lr=1.0, buffers=("momentum",), step="momentum"
    ),
    "fedadam": ServerOptimizer(
        default_server_lr=1e-2, buffers=("m", "v"), step="adaptive"
    ),
    "fedyogi": ServerOptimizer(
        default_server_lr=1e-2, buffers=("m", "v"), step="adaptive"
    ),
    "fedadagrad": ServerOptimizer(
        default_server_lr=1e-1, buffers=("m", "v"), step="adaptive"
    ),
}
STRATEGIES: tuple[str, ...] = tuple(SERVER_OPTIMIZERS)


@dataclass(frozen=True)
class StrategyConfig:
    """Which server optimizer aggregates the rounds, and its settings."""

    # One of STRATEGIES: fedavg | fedavgm | fedadam | fedyogi | fedadagrad.
    name: str = setting(
        "fedavg", choices=STRATEGIES, flag="strategy", help="server optimizer"
    )
    # Server step size eta; 1.0 is plain FedAvg. None takes the strategy's own
    # (`default_server_lr`): the adaptive strategies need far smaller steps.
    server_lr: float | None = setting(
        None,
        above=0,
        at_most=MAX_SERVER_LR,
        help="server step size (default: the strategy's own)",
    )
    # FedAvgM momentum beta (Hsu et al. 2019 use 0.9).
    server_momentum: float = setting(0.9, at_least=0, below=1)
    # First-moment decay of FedAdagrad/FedAdam/FedYogi (Reddi et al. 2021: 0.9).
    beta1: float = setting(0.9, at_least=0, below=1)
    # Second-moment decay of FedAdam/FedYogi (Reddi et al. 2021: 0.99).
    beta2: float = setting(0.99, at_least=0, below=1)
    # Adaptivity tau: the denominator's epsilon and sqrt of v's start value.
    tau: float = setting(1e-3, above=0)
    # Aggregations over which server_lr rises linearly to its value (0: none).
    warmup_rounds: int = setting(
        0,
        at_least=0,
        flag="server-warmup-rounds",
        help="aggregations over which the server step rises linearly to "
        "--server-lr, 0 for none",
    )
    # Aggregations over which FedAvgM's momentum rises linearly from 0 to
    # server_momentum (0: none).
    momentum_warmup_rounds: int = setting(
        0,
        at_least=0,
        flag="server-momentum-warmup-rounds",
        help="aggregations over which FedAvgM's momentum rises linearly from 0, "
        "0 for none",
    )

    def __post_init__(self) -> None:
        check_settings(self, FederationConfigError)

    @property
    def optimizer(self) -> ServerOptimizer:
        """This strategy's entry in `SERVER_OPTIMIZERS`."""
        return SERVER_OPTIMIZERS[self.name]

    def resolved(self) -> StrategyConfig:
        """This config with the strategy's default server_lr filled in."""
        return replace(self, server_lr=self.step_size)

    @property
    def step_size(self) -> float:
        """server_lr, or the strategy's default where it is None."""
        if self.server_lr is None:
            return self.optimizer.default_server_lr
        return self.server_lr

    def lr_at(self, aggregations: int) -> float:
        """The server step of the aggregation after `aggregations` earlier ones."""
        if self.warmup_rounds == 0:
            return self.step_size
        return self.step_size * min(1.0, (aggregations + 1) / self.warmup_rounds)

    def momentum_at(self, aggregations: int) -> float:
        """FedAvgM's beta in the aggregation after `aggregations` earlier ones."""
        if self.momentum_warmup_rounds == 0:
            return self.server_momentum
        ramp = min(1.0, aggregations / self.momentum_warmup_rounds)
        return self.server_momentum * ramp


@dataclass(frozen=True)
class AggregationConfig:
    """How the screened updates are combined before the server step."""

    # "mean" (FedAvg's example-weighted mean), "median" or "trimmed-mean"
    # (coordinate-wise, Yin et al. 2018), "krum" or "multi-krum" (Blanchard et al.
    # 2017). The server optimizer (`StrategyConfig`) then applies the result.
    name: str = setting(
        "mean",
        choices=AGGREGATORS,
        flag="aggregator",
        help="how screened updates are combined: FedAvg's weighted mean, the "
        "coordinate-wise median or trimmed mean, Krum or Multi-Krum (default: "
        "%(default)s)",
    )
    # trimmed-mean: share of each coordinate's values dropped at each end (beta).
    trim_fraction: float = setting(0.1, at_least=0, below=0.5)
    # krum / multi-krum: share of a round's reports assumed hostile (f = floor of
    # this times the reports, at most what Krum tolerates).
    byzantine_fraction: float = setting(0.3, at_least=0, below=0.5)

    def __post_init__(self) -> None:
        check_settings(self, FederationConfigError)


def default_server_lr(name: str) -> float:
    """A sensible `server_lr` for strategy `name` (see `SERVER_OPTIMIZERS`)."""
    if name not in SERVER_OPTIMIZERS:
        raise FederationConfigError(
            f"unknown strategy {name!r} (one of {', '.join(STRATEGIES)})"
        )
    return SERVER_OPTIMIZERS[name].default_server_lr
