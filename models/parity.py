"""Do two engines suggest the same? Prefixes typed as a person types, compared.

An exported model is only as good as its agreement with the model that was
trained: the strip a phone shows must be the strip the evaluation measured.
`typed_prefixes` cuts held-out messages at each keystroke of a letter or a
space (what a person has on screen while typing); `strip_agreement` asks two
`Suggester`s for the strip after each and counts identical strips.
"""

from __future__ import annotations

from collections.abc import Sequence

from corpora.samples import evenly_spaced
from models.suggest import Suggester


def typed_prefixes(texts: Sequence[str], limit: int | None) -> list[str]:
    """At most `limit` prefixes of `texts`, each ending just after a letter or a
    space, evenly spaced through all such prefixes in typing order."""
    prefixes = [
        text[:end]
        for text in texts
        for end in range(1, len(text) + 1)
        if text[end - 1].isalpha() or text[end - 1] == " "
    ]
    return evenly_spaced(prefixes, limit)


def strips(
    suggester: Suggester, prefixes: Sequence[str], k: int = 3
) -> list[list[str]]:
    """The strip of `k` words `suggester` shows after each prefix, in order."""
    return [suggester.suggest(prefix, k) for prefix in prefixes]


def strip_agreement(a: Sequence[list[str]], b: Sequence[list[str]]) -> float:
    """The share of positions where two engines' strips are identical."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} strips against {len(b)}")
    if not a:
        return float("nan")
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
