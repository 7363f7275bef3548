"""The phone's side of a protected round: what leaves the phone, and how.

Each step is a pure function of the phone's own report, applied where the
update lives (on the rank that trained it), in the order of DP-FedAvg
(McMahan et al. 2018) over SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020):

  clip to C (`device_sim.clipping.clip_update`) → weight it, `num_examples ×
  clipped` with its weighted losses and count appended (SecAgg alone:
  `device_sim.masked_figures`), or weight 1 with the centred clip bit appended
  (DP with an adaptive clip) → add the phone's noise share (distributed DP) →
  quantise and mask (`secagg`).

A hostile phone under SecAgg skips the honest pipeline and masks what it likes
(`device_sim.faults`); the server can only check the sum. The server's side
(`coordinator.protections`) chooses the `Recipe` once a round from public
settings and never sees a phone's vector before it is summed.
"""

from __future__ import annotations

import numpy as np

from device_sim.clipping import clip_bit, clip_update, flatten
from device_sim.faults import Fault, hostile_contribution
from device_sim.masked_figures import loss_scale, weighted_losses
from device_sim.phone import ClientReport
from device_sim.recipe import Recipe
from secagg import MaskerLike


def contribution(report: ClientReport, recipe: Recipe) -> np.ndarray:
    """The phone's float64 vector before noise and masking: clipped, weighted,
    appended.

    (D,) clipped update times `num_examples`, then its three weighted losses
    and the count, when `weighted`; weight 1 with the centred bit [norm <= C] − ½
    appended when `clip_bit` (`device_sim.clipping.clip_bit`).
    """
    clipped, norm = clip_update(report.update, recipe.clip_norm)
    x = flatten(clipped)
    if recipe.weighted:
        n = report.num_examples
        scale = loss_scale(recipe.clip_norm)
        losses = weighted_losses(report.metrics, n, scale=scale)
        return np.concatenate([x * n, losses, [float(n)]])
    if recipe.clip_bit:
        return np.append(x, clip_bit(norm, recipe.clip_norm))
    return x


def protect(
    report: ClientReport,
    recipe: Recipe,
    *,
    server_round: int,
    masker: MaskerLike | None = None,
    fault: Fault | None = None,
) -> np.ndarray:
    """What leaves the phone: its contribution with its noise share, masked
    (int64 in [0, 2^b)) when a `masker` is given, else float64.

    A phone with a `fault` under SecAgg masks its own vector unclipped.
    """
    x = contribution(report, recipe)
    hostile = masker is not None and fault is not None
    if hostile:
        assert masker is not None and fault is not None
        update = hostile_contribution(
            report.update,
            report.num_examples,
            fault=fault,
            clip_norm=recipe.clip_norm,
            weighted=recipe.weighted,
            max_abs=masker.spec.max_abs,
        )
        x[: update.shape[0]] = update  # its figures after it as reported
    if recipe.noise is not None:
        rng = recipe.noise.rng(server_round, report.client_id)
        x = x + recipe.noise.draw(
            x.shape[0], clip_norm=recipe.clip_norm, bit=recipe.clip_bit, rng=rng
        )
    if masker is None:
        return x
    return masker.mask(x, clip=not hostile).vector
