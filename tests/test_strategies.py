"""Server aggregation strategies against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import f32
from safetensors.torch import load_file, save_file

from coordinator.round.robust_aggregation import weighted_mean
from coordinator.round.strategies import (
    STRATEGIES,
    StrategyConfig,
    StrategyState,
    aggregate,
    default_server_lr,
    initial_state,
    state_from_tensors,
    state_to_tensors,
)


def assert_values(actual: list[torch.Tensor], expected: list[list[float]]) -> None:
    """float32 results equal hand-computed float64 values to float32 precision."""
    assert [t.dtype for t in actual] == [torch.float32] * len(expected)
    for tensor, values in zip(actual, expected, strict=True):
        torch.testing.assert_close(
            tensor.double(),
            torch.tensor(values, dtype=torch.float64),
            rtol=1e-6,
            atol=1e-7,
        )


def test_weighted_mean_hand_computed() -> None:
    # Prepare
    updates = [[f32(1, 2, 3)], [f32(3, 4, 5)]]

    # Execute
    average = weighted_mean(updates, [1, 3])

    # Assert: (1 * [1, 2, 3] + 3 * [3, 4, 5]) / 4
    assert_values(average, [[2.5, 3.5, 4.5]])


def test_weighted_mean_several_tensors_keep_shapes() -> None:
    # Prepare
    updates = [[f32(2), torch.ones(2, 2)], [f32(6), torch.zeros(2, 2)]]

    # Execute
    average = weighted_mean(updates, [3, 1])

    # Assert: (3 * 2 + 6) / 4 = 3 and 3 / 4 of the ones
    assert average[1].shape == (2, 2)
    assert_values([average[0], average[1].flatten()], [[3.0], [0.75] * 4])


def test_weighted_mean_rejects_bad_input() -> None:
    # Prepare
    one = [f32(1, 2)]

    # Execute / Assert
    with pytest.raises(ValueError, match="no updates"):
        weighted_mean([], [])
    with pytest.raises(ValueError, match="positive"):
        weighted_mean([one, one], [1, 0])
    with pytest.raises(ValueError, match="tensor 0"):
        weighted_mean([one, [f32(1, 2, 3)]], [1, 1])


def test_aggregate_fedavg_is_weighted_mean_of_client_models() -> None:
    # Prepare: clients trained [1, 1, 1] into [1, 2, 3] and [3, 4, 5]
    config = StrategyConfig(name="fedavg")
    x = [f32(1, 1, 1)]
    results = [([f32(0, 1, 2)], 1), ([f32(2, 3, 4)], 3)]

    # Execute
    new, state = aggregate(config, x, results, initial_state(config, x))

    # Assert
    assert_values(new, [[2.5, 3.5, 4.5]])
    assert state.steps == 1
    assert state.buffers == {}


def test_aggregate_fedavg_server_lr_scales_step() -> None:
    # Prepare
    config = StrategyConfig(name="fedavg", server_lr=0.5)
    x = [f32(1, 1, 1)]
    results = [([f32(0, 1, 2)], 1), ([f32(2, 3, 4)], 3)]

    # Execute
    new, _ = aggregate(config, x, results, initial_state(config, x))

    # Assert: Delta = [1.5, 2.5, 3.5]; 1 + 0.5 * Delta
    assert_values(new, [[1.75, 2.25, 2.75]])


Results = list[tuple[list[torch.Tensor], int]]


def two_rounds(
    config: StrategyConfig, x0: list[torch.Tensor], first: Results, second: Results
) -> tuple[list[torch.Tensor], StrategyState, list[torch.Tensor], StrategyState]:
    """`(x1, state1, x2, state2)`: two `aggregate` calls from the initial state."""
    x1, state1 = aggregate(config, x0, first, initial_state(config, x0))
    x2, state2 = aggregate(config, x1, second, state1)
    return x1, state1, x2, state2


def test_aggregate_fedavgm_two_rounds() -> None:
    # Prepare
    config = StrategyConfig(name="fedavgm", server_lr=0.5, server_momentum=0.5)
    x0 = [f32(1, -1)]
    round2 = [([f32(0, 2)], 2), ([f32(-4, 2)], 2)]

    # Execute
    x1, state1, x2, state2 = two_rounds(config, x0, [([f32(2, 4)], 5)], round2)

    # Assert: m1 = [2, 4], x1 = [1, -1] + 0.5 * m1 = [2, 1];
    # Delta2 = [-2, 2], m2 = 0.5 * [2, 4] + [-2, 2] = [-1, 4],
    # x2 = [2, 1] + 0.5 * [-1, 4] = [1.5, 3]
    assert_values(x1, [[2.0, 1.0]])
    assert_values(list(state1.buffers["momentum"]), [[2.0, 4.0]])
    assert_values(x2, [[1.5, 3.0]])
    assert_values(list(state2.buffers["momentum"]), [[-1.0, 4.0]])
    assert state2.steps == 2


def test_aggregate_fedavgm_without_momentum_equals_fedavg() -> None:
    # Prepare
    fedavgm = StrategyConfig(name="fedavgm", server_lr=0.5, server_momentum=0.0)
    fedavg = StrategyConfig(name="fedavg", server_lr=0.5)
    x = [f32(0.25, -3.0), f32(7.0)]
    rounds = [
        [([f32(1, 2), f32(-1)], 3), ([f32(5, -2), f32(3)], 1)],
        [([f32(0.5, 0.5), f32(2)], 2)],
    ]
    xm, sm = x, initial_state(fedavgm, x)
    xa, sa = x, initial_state(fedavg, x)

    # Execute
    for results in rounds:
        xm, sm = aggregate(fedavgm, xm, results, sm)
        xa, sa = aggregate(fedavg, xa, results, sa)

    # Assert
    for a, b in zip(xm, xa, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def adaptive_config(name: str, server_lr: float) -> StrategyConfig:
    # beta1 = beta2 = 0.5 and tau = 1 (v0 = 1) keep the hand arithmetic short.
    return StrategyConfig(name=name, server_lr=server_lr, beta1=0.5, beta2=0.5, tau=1.0)


# Each adaptive strategy over two rounds of one phone, beta1 = beta2 = 0.5 and
# tau = 1 (`adaptive_config`); hand-computed (x1, m1, v1, x2, m2, v2).
ADAPTIVE_TWO_STEPS = [
    # FedAdam, server lr 0.6, x0 = [1, 1], updates [7, 1] then [-1, 7]:
    # m1 = 0.5 * [7, 1] = [3.5, 0.5]; v1 = 0.5 * 1 + 0.5 * [49, 1] = [25, 1];
    # x1 = 1 + 0.6 * [3.5 / (5 + 1), 0.5 / (1 + 1)] = [1.35, 1.15];
    # m2 = 0.5 * [3.5, 0.5] + 0.5 * [-1, 7] = [1.25, 3.75];
    # v2 = 0.5 * [25, 1] + 0.5 * [1, 49] = [13, 25];
    # x2 = x1 + 0.6 * [1.25 / (sqrt(13) + 1), 3.75 / (5 + 1)]
    pytest.param(
        "fedadam",
        0.6,
        [(1, 1), (7, 1), (-1, 7)],
        [
            [1.35, 1.15],
            [3.5, 0.5],
            [25.0, 1.0],
            [1.35 + 0.6 * 1.25 / (math.sqrt(13) + 1), 1.525],
            [1.25, 3.75],
            [13.0, 25.0],
        ],
        id="fedadam",
    ),
    # FedYogi, server lr 0.5, x0 = [0, 0], updates [4, 1] then [2, 0.5]:
    # m1 = [2, 0.5]; Delta^2 = [16, 1], sign(v0 - Delta^2) = [-1, 0], so
    # v1 = [1 + 0.5 * 16, 1] = [9, 1] (Adam would give [8.5, 1]);
    # x1 = 0.5 * [2 / (3 + 1), 0.5 / (1 + 1)] = [0.25, 0.125];
    # m2 = 0.5 * [2, 0.5] + 0.5 * [2, 0.5] = [2, 0.5]; Delta^2 = [4, 0.25] < v1,
    # so v2 = v1 - 0.5 * Delta^2 = [7, 0.875];
    # x2 = x1 + 0.5 * [2 / (sqrt(7) + 1), 0.5 / (sqrt(0.875) + 1)]
    pytest.param(
        "fedyogi",
        0.5,
        [(0, 0), (4, 1), (2, 0.5)],
        [
            [0.25, 0.125],
            [2.0, 0.5],
            [9.0, 1.0],
            [
                0.25 + 0.5 * 2 / (math.sqrt(7) + 1),
                0.125 + 0.5 * 0.5 / (math.sqrt(0.875) + 1),
            ],
            [2.0, 0.5],
            [7.0, 0.875],
        ],
        id="fedyogi",
    ),
    # FedAdagrad, server lr 0.5, x0 = [1, 2], updates [0.75, -2.4] then [1.5, 0]:
    # m1 = [0.375, -1.2]; v1 = 1 + [0.5625, 5.76] = [1.5625, 6.76];
    # x1 = [1, 2] + 0.5 * [0.375 / 2.25, -1.2 / 3.6] = [1 + 1/12, 2 - 1/6];
    # m2 = 0.5 * m1 + 0.5 * [1.5, 0] = [0.9375, -0.6]; v2 = v1 + [2.25, 0];
    # x2 = x1 + 0.5 * [0.9375 / (sqrt(3.8125) + 1), -0.6 / 3.6]
    pytest.param(
        "fedadagrad",
        0.5,
        [(1, 2), (0.75, -2.4), (1.5, 0)],
        [
            [1 + 1 / 12, 2 - 1 / 6],
            [0.375, -1.2],
            [1.5625, 6.76],
            [1 + 1 / 12 + 0.46875 / (math.sqrt(3.8125) + 1), 2 - 1 / 6 - 1 / 12],
            [0.9375, -0.6],
            [3.8125, 6.76],
        ],
        id="fedadagrad",
    ),
]


@pytest.mark.parametrize(
    ("name", "server_lr", "points", "expected"), ADAPTIVE_TWO_STEPS
)
def test_aggregate_adaptive_two_steps(
    name: str,
    server_lr: float,
    points: list[tuple[float, float]],
    expected: list[list[float]],
) -> None:
    # Prepare: x0, then one phone's update in each round
    config = adaptive_config(name, server_lr=server_lr)
    x0, first, second = ([f32(*point)] for point in points)

    # Execute
    x1, state1, x2, state2 = two_rounds(config, x0, [(first, 1)], [(second, 1)])

    # Assert
    reached = [x1, state1.buffers["m"], state1.buffers["v"]]
    reached += [x2, state2.buffers["m"], state2.buffers["v"]]
    for tensors, values in zip(reached, expected, strict=True):
        assert_values(list(tensors), [values])


def test_aggregate_fedadam_paper_defaults_first_step() -> None:
    # Prepare: beta1 = 0.9, beta2 = 0.99, tau = 1e-3; two clients averaging to 1
    config = StrategyConfig(name="fedadam", server_lr=0.01)
    x0 = [f32(0)]
    results = [([f32(0.5)], 1), ([f32(1.25)], 2)]

    # Execute
    x1, _ = aggregate(config, x0, results, initial_state(config, x0))

    # Assert: Delta = (0.5 + 2.5) / 3 = 1; m1 = 0.1;
    # v1 = 0.99 * 1e-6 + 0.01 * 1; x1 = 0.01 * 0.1 / (sqrt(v1) + 1e-3)
    expected = 0.01 * 0.1 / (math.sqrt(0.99e-6 + 0.01) + 1e-3)
    assert_values(x1, [[expected]])


def test_initial_state_buffers_per_strategy() -> None:
    # Prepare
    x = [torch.ones(2, 3), torch.ones(4)]

    # Execute
    states = {name: initial_state(StrategyConfig(name=name), x) for name in STRATEGIES}

    # Assert
    assert states["fedavg"].buffers == {}
    assert [tuple(t.shape) for t in states["fedavgm"].buffers["momentum"]] == [
        (2, 3),
        (4,),
    ]
    for name in ("fedadam", "fedyogi", "fedadagrad"):
        m, v = states[name].buffers["m"], states[name].buffers["v"]
        assert all(torch.equal(t, torch.zeros_like(t)) for t in m)
        assert all(torch.equal(t, torch.full_like(t, 1e-6)) for t in v)
        assert states[name].steps == 0


def test_aggregate_leaves_inputs_untouched_and_unshared() -> None:
    # Prepare
    x = [f32(1, 2), torch.ones(2, 2)]
    results = [([f32(0.5, -1), torch.full((2, 2), 3.0)], 2), ([f32(1, 1), x[1]], 1)]
    snapshot = [t.clone() for t in x] + [t.clone() for u, _ in results for t in u]

    for name in STRATEGIES:
        config = StrategyConfig(name=name, server_lr=default_server_lr(name))
        state = initial_state(config, x)
        buffers = [t.clone() for ts in state.buffers.values() for t in ts]

        # Execute
        new, new_state = aggregate(config, x, results, state)

        # Assert
        after = list(x) + [t for u, _ in results for t in u]
        assert all(torch.equal(a, b) for a, b in zip(after, snapshot, strict=True))
        old = [t for ts in state.buffers.values() for t in ts]
        assert all(torch.equal(a, b) for a, b in zip(old, buffers, strict=True))
        assert state.steps == 0
        inputs = {t.data_ptr() for t in after + old}
        outputs = [t for ts in new_state.buffers.values() for t in ts] + new
        assert not inputs & {t.data_ptr() for t in outputs}


def test_aggregate_rejects_mismatched_input() -> None:
    # Prepare
    x = [f32(1, 2)]
    adam = StrategyConfig(name="fedadam")
    fedavgm_state = initial_state(StrategyConfig(name="fedavgm"), x)

    # Execute / Assert
    with pytest.raises(ValueError, match="no results"):
        aggregate(adam, x, [], initial_state(adam, x))
    with pytest.raises(ValueError, match="needs"):
        aggregate(adam, x, [([f32(1, 1)], 1)], fedavgm_state)
    with pytest.raises(ValueError, match="expected"):
        aggregate(adam, x, [([f32(1, 1, 1)], 1)], initial_state(adam, x))
    with pytest.raises(ValueError, match="float64"):
        update = [torch.ones(2, dtype=torch.float64)]
        aggregate(adam, x, [(update, 1)], initial_state(adam, x))


def test_state_tensors_round_trip_through_safetensors(tmp_path) -> None:
    # Prepare: two FedYogi rounds, saved after the first
    config = StrategyConfig(name="fedyogi", server_lr=0.03)
    x0 = [f32(1, -2), torch.linspace(0, 1, 6).reshape(2, 3)]
    round1 = [([f32(0.1, 0.2), torch.full((2, 3), -0.1)], 3)]
    round2 = [([f32(-0.3, 0.05), torch.full((2, 3), 0.2)], 1)]
    x1, state1, expected, _ = two_rounds(config, x0, round1, round2)

    # Execute
    tensors = state_to_tensors(state1)
    save_file(tensors, str(tmp_path / "state.safetensors"))
    restored = state_from_tensors(load_file(str(tmp_path / "state.safetensors")), 1)
    resumed, resumed_state = aggregate(config, x1, round2, restored)

    # Assert
    assert sorted(tensors) == ["m.0", "m.1", "v.0", "v.1"]
    assert restored.steps == 1 and resumed_state.steps == 2
    for a, b in zip(resumed, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_state_from_tensors_rejects_bad_names() -> None:
    # Prepare
    t = f32(1)

    # Execute / Assert
    with pytest.raises(ValueError, match="not '<buffer>.<index>'"):
        state_from_tensors({"m": t}, 0)
    with pytest.raises(ValueError, match="not '<buffer>.<index>'"):
        state_from_tensors({"m.x": t}, 0)
    with pytest.raises(ValueError, match=r"indices \[0, 2\]"):
        state_from_tensors({"m.0": t, "m.2": t}, 0)
    with pytest.raises(ValueError, match="steps"):
        state_from_tensors({}, -1)


def test_state_from_tensors_empty_is_fedavg_state() -> None:
    # Execute
    state = state_from_tensors({}, 7)

    # Assert
    assert isinstance(state, StrategyState)
    assert state.steps == 7 and state.buffers == {}


def test_default_server_lr_per_strategy() -> None:
    # Execute
    rates = {name: default_server_lr(name) for name in STRATEGIES}

    # Assert
    assert rates == {
        "fedavg": 1.0,
        "fedavgm": 1.0,
        "fedadam": 0.01,
        "fedyogi": 0.01,
        "fedadagrad": 0.1,
    }
    with pytest.raises(ValueError, match="unknown strategy"):
        default_server_lr("fedsgd")


def test_strategy_config_rejects_bad_settings() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="unknown strategy"):
        StrategyConfig(name="fedprox")
    with pytest.raises(ValueError, match="server_lr"):
        StrategyConfig(server_lr=0.0)
    with pytest.raises(ValueError, match="beta2"):
        StrategyConfig(beta2=1.0)
    with pytest.raises(ValueError, match="tau"):
        StrategyConfig(tau=0.0)
