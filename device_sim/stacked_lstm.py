"""The next-word model with a separate set of weights per phone, stacked.

`models.model.NextWordModel` holds one set of weights. Here P sets are stacked along
a leading phone axis `(P, ...)` under the model's parameter names, and one pass
runs the forward and hand-written backward of many phones, each on its own batch
with its own weights: what P copies of the model under autograd would compute.

Each phone's batch rows are sorted longest first and the phones by their longest
row, so the (phone, row) pairs still running at step t of the LSTM are a prefix in
both axes: the recurrence is a batched matrix product over that prefix, and little
padding is multiplied. The tied output layer, about 70 % of the arithmetic, and
the weight gradients run phone by phone on exactly its non-padding targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.batching import pad_batch
from models.model import NextWordModel

# Per-phone weights (or gradients) by parameter name, each of shape (P, *shape).
Stacked = dict[str, torch.Tensor]

# The parameters the hand-written forward and backward below implement.
PARAMETER_NAMES = (
    "output_bias",
    "embedding.weight",
    "lstm.weight_ih_l0",
    "lstm.weight_hh_l0",
    "lstm.bias_ih_l0",
    "lstm.bias_hh_l0",
    "projection.weight",
    "projection.bias",
)


def stack_parameters(model: NextWordModel, count: int) -> Stacked:
    """`count` copies of the model's weights, stacked along a new first axis."""
    named = dict(model.named_parameters())
    if tuple(named) != PARAMETER_NAMES:
        raise ValueError(f"batched training needs the parameters {PARAMETER_NAMES}")
    return {
        name: p.detach().unsqueeze(0).repeat(count, *([1] * p.dim()))
        for name, p in named.items()
    }


@dataclass(frozen=True)
class _Tick:
    """One step of several phones laid out for the recurrence.

    Phones come longest batch first and each batch's rows longest first, so the
    (phone, row) pairs still running at time t are a prefix in both axes.
    """

    phones: torch.Tensor  # (n,) the rows of their weights in the stack
    order: list[int]  # the index of each one's batch among those given
    inputs: torch.Tensor  # (n, T, B) token ids, time-major
    targets: torch.Tensor  # (n, T * B) next tokens, pad where none
    live: list[tuple[int, int]]  # per time step: (phones, rows) still running
    positions: list[torch.Tensor]  # per phone: flat (t * B + row) target positions


def _layout(
    batches: Sequence[torch.Tensor], phone_ids: Sequence[int], pad_id: int
) -> _Tick:
    """Sort, pad and index batch k (shape (B_k, L_k + 1)) of phone `phone_ids[k]`."""
    lengths = [(b[:, 1:] != pad_id).sum(1) for b in batches]
    rows = [torch.argsort(n, descending=True, stable=True) for n in lengths]
    order = sorted(range(len(batches)), key=lambda k: -int(lengths[k].max()))
    count = len(order)
    height = max(b.shape[0] for b in batches)
    width = max(b.shape[1] for b in batches)
    tokens = torch.full((count, height, width), pad_id, dtype=torch.long)
    for slot, k in enumerate(order):
        tokens[slot, : batches[k].shape[0], : batches[k].shape[1]] = batches[k][rows[k]]
    inputs = tokens[:, :, :-1].transpose(1, 2).contiguous()  # (n, T, B)
    targets = tokens[:, :, 1:].transpose(1, 2).reshape(count, -1)
    running = targets.view_as(inputs) != pad_id  # (n, T, B)
    per_phone = running.sum(2)  # (n, T)
    live = list(
        zip(
            (per_phone > 0).sum(0).tolist(),
            per_phone.max(0).values.tolist(),
            strict=True,
        )
    )
    positions = [m.view(-1).nonzero().squeeze(1) for m in running]
    phones = torch.tensor([phone_ids[k] for k in order], dtype=torch.long)
    return _Tick(phones, order, inputs, targets, live, positions)


@dataclass(frozen=True)
class _Forward:
    """What the backward pass needs of a tick's forward pass."""

    x: torch.Tensor  # embedded inputs (n, T, B, E)
    w_ih: torch.Tensor  # the tick's phones' (n, 4H, E)
    w_hh: torch.Tensor  # (n, 4H, H)
    gates: torch.Tensor  # (n, T, B, 4H)
    cells: torch.Tensor  # (n, T + 1, B, H)
    hidden: torch.Tensor  # (n, (T + 1) * B, H): h_{t-1} at t * B + row


def _forward(weights: Stacked, tick: _Tick) -> _Forward:
    """Embedding and LSTM of every phone of a tick."""
    n = len(tick.phones)
    embedding = weights["embedding.weight"]  # (P, V, E)
    vocab, dim = embedding.shape[1:]
    ids = tick.inputs + tick.phones.view(n, 1, 1) * vocab
    x = embedding.view(-1, dim)[ids]  # (n, T, B, E)
    w_ih = weights["lstm.weight_ih_l0"][tick.phones]
    w_hh = weights["lstm.weight_hh_l0"][tick.phones]
    bias = (weights["lstm.bias_ih_l0"] + weights["lstm.bias_hh_l0"])[tick.phones]
    gates, cells, hidden = _lstm_forward(x, w_ih, w_hh, bias, tick.live)
    return _Forward(x, w_ih, w_hh, gates, cells, hidden.view(n, -1, w_hh.shape[-1]))


def _lstm_forward(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    bias: torch.Tensor,
    live: list[tuple[int, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's LSTM (gate order i, f, g, o) on the running prefix of each step.

    Args:
        x: Inputs, shape (n, T, B, E).
        w_ih, w_hh, bias: Each phone's (4H, E), (4H, H) and b_ih + b_hh (4H).
        live: Per time step, the phones and rows still running.

    Returns:
        Activated gates (n, T, B, 4H), and cells and hidden states (n, T + 1, B, H)
        with the zero initial state first; zeros where nothing runs.
    """
    n, steps, rows, dim = x.shape
    h = w_hh.shape[-1]
    gates = x.new_zeros(n, steps, rows, 4 * h)
    cells = x.new_zeros(n, steps + 1, rows, h)
    hidden = x.new_zeros(n, steps + 1, rows, h)
    # The input side of every step in one product: padding included, it is still
    # cheaper than a product per step.
    pre = torch.baddbmm(bias.unsqueeze(1), x.view(n, -1, dim), w_ih.mT)
    pre = pre.view(n, steps, rows, -1)  # (n, T, B, 4H)
    w_hh_t = w_hh.mT
    for t, (m, r) in enumerate(live):
        z = torch.baddbmm(pre[:m, t, :r], hidden[:m, t, :r], w_hh_t[:m])  # (m, r, 4H)
        a = torch.sigmoid(z)
        a[..., 2 * h : 3 * h] = torch.tanh(z[..., 2 * h : 3 * h])
        i, f, g, o = a.split(h, -1)
        c = torch.addcmul(f * cells[:m, t, :r], i, g)
        gates[:m, t, :r], cells[:m, t + 1, :r] = a, c
        hidden[:m, t + 1, :r] = o * torch.tanh(c)
    return gates, cells, hidden


def _lstm_backward(
    gates: torch.Tensor,
    cells: torch.Tensor,
    w_hh: torch.Tensor,
    d_hidden: torch.Tensor,
    live: list[tuple[int, int]],
) -> torch.Tensor:
    """Gradient with respect to the gates' pre-activations (n, T, B, 4H).

    `d_hidden` (n, T, B, H) is the gradient reaching each hidden state from above.
    """
    n, steps, rows, four_h = gates.shape
    h = four_h // 4
    i, f, g, o = gates.split(h, -1)
    tanh_c = torch.tanh(cells[:, 1:])
    # d pre = [dc * g, dc * c_prev, dc * i, dh * tanh(c)] * activation slopes.
    factor = torch.cat(
        [
            g * i * (1 - i),
            cells[:, :-1] * f * (1 - f),
            i * (1 - g * g),
            tanh_c * o * (1 - o),
        ],
        -1,
    )
    cell_slope = o * (1 - tanh_c * tanh_c)  # d c / d h through h = o tanh(c)
    d_pre = torch.zeros_like(gates)
    dh_state = gates.new_zeros(n, rows, h)
    dc_state = gates.new_zeros(n, rows, h)
    for t in reversed(range(steps)):
        m, r = live[t]
        dh, dc = dh_state[:m, :r], dc_state[:m, :r]
        dh.add_(d_hidden[:m, t, :r])
        dc.addcmul_(dh, cell_slope[:m, t, :r])
        d = torch.mul(torch.cat([dc, dc, dc, dh], -1), factor[:m, t, :r])
        d_pre[:m, t, :r] = d
        dh.copy_(torch.bmm(d, w_hh[:m]))
        dc.mul_(f[:m, t, :r])
    return d_pre


def _log_probs(
    weights: Stacked, phone: int, hidden: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection (N, E) and next-token log-probabilities (N, V) of one phone."""
    w_proj = weights["projection.weight"][phone]  # (E, H)
    z = torch.addmm(weights["projection.bias"][phone], hidden, w_proj.T)
    logits = z @ weights["embedding.weight"][phone].T  # tied output layer
    return z, logits.add_(weights["output_bias"][phone]).log_softmax(-1)


def _output_layer(
    weights: Stacked,
    grads: Stacked,
    phone: int,
    hidden: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[float, torch.Tensor]:
    """Projection, tied output layer and mean cross-entropy of one phone's targets.

    Writes the phone's gradients of the output bias, the projection and the output
    side of the embedding; returns the loss and its gradient for `hidden` (N, H).
    """
    z, log_probs = _log_probs(weights, phone, hidden)
    picked = log_probs.gather(1, targets.unsqueeze(1))
    # N times the gradient of the logits: softmax - one-hot. The 1 / N is applied
    # to the (N, E) factors rather than to this (N, V) matrix.
    d_logits = log_probs.exp_()
    d_logits.scatter_add_(1, targets.unsqueeze(1), -torch.ones_like(picked))
    scale = 1.0 / len(targets)
    torch.sum(d_logits, 0, out=grads["output_bias"][phone]).mul_(scale)
    torch.mm(d_logits.T, z * scale, out=grads["embedding.weight"][phone])
    d_z = (d_logits @ weights["embedding.weight"][phone]).mul_(scale)  # (N, E)
    torch.mm(d_z.T, hidden, out=grads["projection.weight"][phone])
    torch.sum(d_z, 0, out=grads["projection.bias"][phone])
    return -float(picked.mean()), d_z @ weights["projection.weight"][phone]


def step_gradients(
    weights: Stacked, grads: Stacked, batches: Sequence[torch.Tensor], pad_id: int
) -> list[float]:
    """Write phone k's gradient of its batch's mean loss into `grads[...][k]`.

    Args:
        weights: The phones' weights, (P, ...) each; phone k trains on batches[k].
        grads: Buffers of the same shapes; rows k < len(batches) are overwritten.
        batches: One (B_k, L_k + 1) batch per phone.

    Returns:
        Each phone's mean next-token cross-entropy (what `train_step` returns).
    """
    tick = _layout(batches, range(len(batches)), pad_id)
    n, steps, rows = tick.inputs.shape
    fwd = _forward(weights, tick)
    size, dim = fwd.w_hh.shape[-1], fwd.x.shape[-1]
    d_hidden = torch.zeros(n, steps * rows, size)
    losses = [0.0] * n
    for k, phone in enumerate(tick.phones.tolist()):
        at = tick.positions[k]
        losses[phone], d_hidden[k, at] = _output_layer(
            weights, grads, phone, fwd.hidden[k, at + rows], tick.targets[k, at]
        )
    d_pre = _lstm_backward(
        fwd.gates, fwd.cells, fwd.w_hh, d_hidden.view(n, steps, rows, -1), tick.live
    ).view(n, steps * rows, -1)
    for k, phone in enumerate(tick.phones.tolist()):
        at = tick.positions[k]
        d = d_pre[k, at]  # (N, 4H)
        x = fwd.x[k].view(-1, dim)[at]
        torch.mm(d.T, x, out=grads["lstm.weight_ih_l0"][phone])
        torch.mm(d.T, fwd.hidden[k, at], out=grads["lstm.weight_hh_l0"][phone])
        torch.sum(d, 0, out=grads["lstm.bias_ih_l0"][phone])
        grads["lstm.bias_hh_l0"][phone].copy_(grads["lstm.bias_ih_l0"][phone])
        d_x = d @ fwd.w_ih[k]  # input side of the tied embedding: (N, E)
        grads["embedding.weight"][phone].index_add_(0, tick.inputs[k].view(-1)[at], d_x)
    return losses


@torch.no_grad()
def probe_losses(
    weights: Stacked,
    probes: Sequence[list[list[int]]],
    *,
    pad_id: int,
    phones: Sequence[int] | None = None,
    rows: int = 32,
    group_size: int = 16,
) -> list[tuple[float, int]]:
    """`evaluate_loss` on each probe: (mean loss, targets) per probe.

    Probe k is measured with the weights of stack row `phones[k]` (default k). It
    is cut into batches of `rows` sequences; batch j of every probe of a group of
    `group_size` probes runs in the same pass.
    """
    rows_of = list(range(len(probes))) if phones is None else list(phones)
    pieces = [
        [pad_batch(probe[i : i + rows], pad_id) for i in range(0, len(probe), rows)]
        for probe in probes
    ]
    sums, counts = [0.0] * len(probes), [0] * len(probes)
    for start in range(0, len(probes), group_size):
        group = range(start, min(start + group_size, len(probes)))
        for j in range(max((len(pieces[k]) for k in group), default=0)):
            chosen = [k for k in group if len(pieces[k]) > j]
            tick = _layout(
                [pieces[k][j] for k in chosen], [rows_of[k] for k in chosen], pad_id
            )
            fwd = _forward(weights, tick)
            for slot, (phone, k) in enumerate(
                zip(tick.phones.tolist(), tick.order, strict=True)
            ):
                at = tick.positions[slot]
                hidden = fwd.hidden[slot, at + tick.inputs.shape[2]]
                _, log_probs = _log_probs(weights, phone, hidden)
                picked = log_probs.gather(1, tick.targets[slot, at, None])
                sums[chosen[k]] -= float(picked.sum())
                counts[chosen[k]] += len(at)
    return [
        (s / c if c else float("nan"), c) for s, c in zip(sums, counts, strict=True)
    ]
