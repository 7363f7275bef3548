"""The nested federation config, its old flat config.json, and the options its
fields make (`models.settings`, `cli.options`)."""

from __future__ import annotations

import argparse
import json

import pytest

from central.config import CentralConfig, LocalOnlyConfig
from cli.errors import UsageError
from cli.main import build_parser
from cli.privacy_options import privacy_config
from cli.simulate_checks import resume_conflicts
from cli.simulate_cmd import federation_config
from coordinator.config import FederationConfig, FederationConfigError
from coordinator.privacy.dp import DPConfigError
from coordinator.privacy.privacy_config import PrivacyConfigError
from coordinator.round.robust import ScreenConfig, ScreenSettings
from coordinator.round.server_choices import SERVER_OPTIMIZERS, StrategyConfig
from coordinator.round.strategies import _STEPS
from device_sim.config import FleetConfigError, LocalTrainingConfig
from models.settings import LOCAL_ONLY_RENAME, ConfigError, check_bound, renamed

# The "federation" of a config.json that `fedtype simulate --rounds 1
# --max-users 20 --clients-per-round 3 --eval-every 0 --strategy fedadam
# --aggregator median --server-warmup-rounds 2` wrote at 77b777a, before the
# strategy, the screen and the aggregator were nested.
FLAT = json.loads(
    '{"aggregator": "median", "beta1": 0.9, "beta2": 0.99, "byzantine_fraction": '
    '0.3, "checkpoint_every": 10, "clients_per_round": 3, "eval_every": 0, '
    '"fleet": {"bandwidth_mbps": 20.0, "charge_hours": 8.0, "dropout_rate": 0.05, '
    '"eligibility": true, "fault_kind": "nan", "fault_scale": null, '
    '"faulty_fraction": 0.0, "idle_prob": 0.9, "max_users": null, '
    '"shard_messages": null, "speed_sigma": 0.5, "start_hour_utc": 20.0, '
    '"step_seconds": 0.5, "unmetered_prob": 0.8}, "future_messages": 2000, '
    '"future_messages_per_phone": 10, "heldout_messages": 2000, "keep_last": 3, '
    '"keystroke_texts": 400, "local": {"batch_size": 16, "client_lr": 1.0, '
    '"clip_norm": 1.0, "local_epochs": 1, "max_local_steps": 16, "precision": '
    '"fp32", "prox_mu": 0.0, "softmax_full_steps": 0, "softmax_sampled_rounds": '
    'null, "softmax_samples": 1024, "train_softmax": "full", "update_compression": '
    '"none"}, "min_cosine": -0.2, "min_for_norm_check": 6, "min_report_fraction": '
    '0.5, "norm_factor": 5.0, "over_selection": 0.3, "privacy": {"attack_phones": '
    '3, "calibrate_noise": false, "canaries": 0, "delta": null, "dp": null, '
    '"log_attack_words": false, "noise_cohort_size": null, "replayable_noise": '
    'false, "secagg_bits": 32, "secure_aggregation": false, '
    '"simulated_population": null, "target_epsilon": null}, "report_deadline_s": '
    '120.0, "round_interval_s": 600.0, "rounds": 1, "seed": 0, "server_lr": 0.01, '
    '"server_momentum": 0.9, "server_momentum_warmup_rounds": 5, '
    '"server_warmup_rounds": 2, "strategy": "fedadam", "tau": 0.001, '
    '"trim_fraction": 0.1, "workers": 1}'
)


def simulate_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["simulate", "--out", "x", *flags])


def test_federation_config_loads_a_flat_config_json_into_nested_configs() -> None:
    # Execute
    config = FederationConfig.from_dict(FLAT)

    # Assert
    assert config.strategy == StrategyConfig(
        name="fedadam", server_lr=0.01, warmup_rounds=2, momentum_warmup_rounds=5
    )
    assert config.aggregation.name == "median"
    assert config.screen == ScreenSettings()
    assert (config.clients_per_round, config.local.max_local_steps) == (3, 16)


def test_federation_config_round_trips_its_nested_dict() -> None:
    # Prepare
    config = FederationConfig.from_dict(FLAT)

    # Execute
    again = FederationConfig.from_dict(json.loads(json.dumps(config.to_dict())))

    # Assert
    assert again == config
    assert again.to_dict()["strategy"]["name"] == "fedadam"


def test_federation_config_refuses_unknown_nested_keys_with_its_error() -> None:
    # Prepare
    nested = FederationConfig().to_dict()
    nested["screen"]["norm_fudge"] = 2

    # Execute / Assert
    with pytest.raises(FederationConfigError, match="norm_fudge"):
        FederationConfig.from_dict(nested)


def test_config_errors_are_one_type_per_layer() -> None:
    # Assert: the coordinator's narrower errors are kinds of its one error
    assert issubclass(DPConfigError, PrivacyConfigError)
    assert issubclass(PrivacyConfigError, FederationConfigError)
    assert issubclass(FederationConfigError, ConfigError)
    assert issubclass(FleetConfigError, ConfigError)
    with pytest.raises(FleetConfigError, match="client_lr must lie in"):
        LocalTrainingConfig(client_lr=0.0)


def test_check_bound_says_the_bound_and_the_value() -> None:
    # Execute / Assert: (0, 1] refuses 0 and NaN; >= 1 refuses 0
    with pytest.raises(ValueError, match=r"^x must lie in \(0, 1\], not 0$"):
        check_bound("x", 0, (None, 0, 1, None))
    with pytest.raises(ValueError, match=r"^x must lie in \(0, 1\], not nan$"):
        check_bound("x", float("nan"), (None, 0, 1, None))
    with pytest.raises(ValueError, match=r"^n must be >= 1, not 0$"):
        check_bound("n", 0, (1, None, None, None))
    with pytest.raises(ValueError, match=r"^s must be positive and finite, not inf$"):
        check_bound("s", float("inf"), (None, 0, None, None), finite=True)
    check_bound("x", None, (None, 0, 1, None))


def test_screen_config_of_run_takes_every_screen_setting() -> None:
    # Prepare
    settings = ScreenSettings(norm_factor=3.0, min_for_norm_check=2, history_size=7)

    # Execute
    screen = ScreenConfig.of_run(settings, LocalTrainingConfig(), relative=False)

    # Assert
    assert (screen.norm_factor, screen.min_for_norm_check) == (3.0, 2)
    assert (screen.history_size, screen.min_cosine, screen.relative) == (
        7,
        settings.min_cosine,
        False,
    )


def test_every_server_optimizer_has_a_step_and_a_default_lr() -> None:
    # Assert
    for name, optimizer in SERVER_OPTIMIZERS.items():
        assert optimizer.step in _STEPS, name
        assert StrategyConfig(name=name).step_size == optimizer.default_server_lr


def test_old_and_canonical_privacy_flags_give_one_config() -> None:
    # Prepare
    old = ["--dp-clip", "0.4", "--adaptive-clip", "0.5", "--dp-noise", "central"]
    new = ["--dp-clip-norm", "0.4", "--adaptive-clip-quantile", "0.5"]
    new += ["--noise-placement", "central"]

    # Execute
    configs = [
        privacy_config(simulate_args(*flags), clients_per_round=20)
        for flags in (old, new)
    ]

    # Assert
    assert configs[0] == configs[1]
    dp = configs[0].dp
    assert dp is not None
    assert (dp.clip_norm, dp.adaptive_clip_quantile, dp.noise_multiplier) == (
        0.4,
        0.5,
        1.0,
    )


def test_privacy_errors_quote_the_flag_as_typed() -> None:
    # Prepare
    old = simulate_args("--dp-clip", "500")
    new = simulate_args("--dp-clip-norm", "500")
    lonely = simulate_args("--adaptive-clip", "0.5")

    # Execute / Assert
    with pytest.raises(
        UsageError, match=r"^--dp-clip 500: must lie in \[0.0001, 100\]"
    ):
        privacy_config(old, clients_per_round=20)
    with pytest.raises(UsageError, match=r"^--dp-clip-norm 500: must lie"):
        privacy_config(new, clients_per_round=20)
    with pytest.raises(UsageError, match="^--adaptive-clip: differential privacy"):
        privacy_config(lonely, clients_per_round=20)


def test_simulate_options_set_the_nested_configs() -> None:
    # Prepare
    args = simulate_args(
        "--strategy", "fedyogi", "--server-warmup-rounds", "3",
        "--aggregator", "trimmed-mean", "--always-eligible", "--clip-norm", "2",
    )  # fmt: skip

    # Execute
    config = federation_config(args)

    # Assert: the flags' fields; the rest keep the run's defaults
    assert (config.strategy.name, config.strategy.warmup_rounds) == ("fedyogi", 3)
    assert config.strategy.momentum_warmup_rounds == 5
    assert config.aggregation.name == "trimmed-mean"
    assert (config.fleet.eligibility, config.local.grad_clip_norm) == (False, 2.0)


def test_resume_conflicts_name_the_flag_as_typed() -> None:
    # Prepare
    args = build_parser().parse_args(
        ["simulate", "--resume", "x", "--dp-clip", "0.5", "--always-eligible"]
    )

    # Execute / Assert
    assert resume_conflicts(args) == ["--always-eligible", "--dp-clip"]


def test_saved_renamed_settings_load_under_their_new_names() -> None:
    # Prepare: a federated run's and a central run's settings saved before the
    # phones' and the trainer's gradient clip was renamed from clip_norm.
    federated = FederationConfig().to_dict()
    local = dict(federated["local"])
    local["clip_norm"] = local.pop("grad_clip_norm") * 3
    federated["local"] = local

    # Execute
    loaded = FederationConfig.from_dict(federated)
    central = CentralConfig.from_dict({"clip_norm": 2.5})

    # Assert: their own values, not the defaults (1.0)
    assert loaded.local.grad_clip_norm == 3.0
    assert (
        FederationConfig.from_dict(
            {**federated, "fleet": {"shard_messages": 7}}
        ).fleet.messages_per_phone
        == 7
    )
    assert central.grad_clip_norm == 2.5
    assert loaded.privacy == FederationConfig().privacy


def test_saved_local_only_settings_load_under_their_new_names() -> None:
    # Prepare: a local-only run's settings saved before the renames.
    saved = {"heldout_messages": 40, "clip_norm": 2.0, "local_epochs": 2}

    # Execute
    config = LocalOnlyConfig(**renamed(saved, LOCAL_ONLY_RENAME))

    # Assert
    assert (config.heldout_messages_per_model, config.grad_clip_norm) == (40, 2.0)
    assert config.local_epochs == 2
