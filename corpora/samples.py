"""Fixed evaluation samples: the same messages every time, whatever the run."""

from __future__ import annotations

from corpora.corpus import CorpusSplits


def evenly_spaced(texts: list[str], limit: int | None) -> list[str]:
    """At most `limit` texts, evenly spaced through `texts` (all when None)."""
    if limit is None or len(texts) <= limit:
        return list(texts)
    step = len(texts) / limit
    return [texts[int(i * step)] for i in range(limit)]


def heldout_sample(splits: CorpusSplits, limit: int | None) -> list[str]:
    """Held-out users' messages, a fixed sample of at most `limit`."""
    return evenly_spaced(splits.heldout_texts(), limit)


def future_sample(
    splits: CorpusSplits, limit: int | None, users: list[str] | None = None
) -> list[str]:
    """Future messages of `users` (default: every training user), at most `limit`."""
    chosen = splits.training_users if users is None else users
    texts = [t for u in chosen for t in splits.training_users[u].future]
    return evenly_spaced(texts, limit)
