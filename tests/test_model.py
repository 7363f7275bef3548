"""The next-word LSTM: shapes, parameter counts, tied weights, carried state."""

from __future__ import annotations

import torch

from models.config import ModelConfig
from models.model import NextWordModel, count_parameters, flops_per_token


def test_model_output_shape_is_batch_time_vocab(tiny_model_config: ModelConfig) -> None:
    # Prepare
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config)
    tokens = torch.randint(0, tiny_model_config.vocab_size, (3, 7))  # (B, T)

    # Execute
    logits, (hidden, cell) = model(tokens)

    # Assert
    assert logits.shape == (3, 7, 10_036)
    assert hidden.shape == cell.shape == (1, 3, 32)


def test_count_parameters_default_model_is_pinned() -> None:
    # Prepare: V=10,036, E=96, H=256
    embedding = 10_036 * 96  # 963,456, shared with the output layer
    lstm = 4 * 256 * (96 + 256) + 2 * 4 * 256  # 362,496 with both bias vectors
    projection = 256 * 96 + 96  # 24,672
    output_bias = 10_036

    # Execute
    count = count_parameters(NextWordModel(ModelConfig()))

    # Assert
    assert count == embedding + lstm + projection + output_bias == 1_360_660


def test_count_parameters_tiny_model_hand_computed() -> None:
    # Prepare: V=10, E=4, H=3 gives 40 + (84 + 24) + (12 + 4) + 10
    config = ModelConfig(vocab_size=10, embed_dim=4, hidden_dim=3, max_len=8)

    # Execute
    count = count_parameters(NextWordModel(config))

    # Assert
    assert count == 174


def test_model_output_layer_is_tied_to_embedding() -> None:
    # Prepare
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=10, embed_dim=4, hidden_dim=3, max_len=8)
    model = NextWordModel(config)
    tokens = torch.tensor([[2, 5, 7]])

    # Execute
    logits, _ = model(tokens)
    hidden, _ = model.lstm(model.embedding(tokens))
    expected = model.projection(hidden) @ model.embedding.weight.T + model.output_bias

    # Assert
    assert torch.allclose(logits, expected)
    assert sorted(name for name, _ in model.named_parameters()) == [
        "embedding.weight",
        "lstm.bias_hh_l0",
        "lstm.bias_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.weight_ih_l0",
        "output_bias",
        "projection.bias",
        "projection.weight",
    ]  # no output weight matrix of its own


def test_model_state_carries_across_calls(tiny_model_config: ModelConfig) -> None:
    # Prepare
    torch.manual_seed(0)
    model = NextWordModel(tiny_model_config).eval()
    tokens = torch.randint(0, tiny_model_config.vocab_size, (2, 6))

    # Execute
    whole, _ = model(tokens)
    first, state = model(tokens[:, :4])
    second, _ = model(tokens[:, 4:], state)

    # Assert
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-6)


def test_model_same_seed_same_weights(tiny_model_config: ModelConfig) -> None:
    # Prepare
    torch.manual_seed(7)
    first = NextWordModel(tiny_model_config)
    torch.manual_seed(7)
    second = NextWordModel(tiny_model_config)

    # Execute
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=True)

    # Assert
    assert all(torch.equal(a, b) for a, b in pairs)


def test_flops_per_token_tiny_model_hand_computed() -> None:
    # Prepare: 2 x (LSTM 4*3*(4+3) + projection 3*4 + output 4*10) = 2 x 136
    config = ModelConfig(vocab_size=10, embed_dim=4, hidden_dim=3, max_len=8)

    # Execute
    flops = flops_per_token(config)

    # Assert
    assert flops == 272
