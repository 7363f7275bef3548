"""The fleet: thousands of phones as plain data, no model per phone.

A phone is its history (strings shared with the corpus), a profile and a seed; the
few model instances that train them belong to an executor and are reused. Which
phones are eligible at a moment is computed for the whole fleet at once from the
profiles' arrays (`device_sim.profile.AvailabilityTable`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from corpora.corpus import CorpusSplits, UserHistory
from device_sim.config import FleetConfig
from device_sim.phone import Phone
from device_sim.profile import AvailabilityTable, draw_profile


class Fleet:
    """Phones by client_id, in a fixed order, with their availability."""

    def __init__(self, phones: Sequence[Phone], *, config: FleetConfig) -> None:
        self.config = config
        self._phones: dict[str, Phone] = {}
        for phone in phones:
            if phone.client_id in self._phones:
                raise ValueError(f"two phones named {phone.client_id!r}")
            self._phones[phone.client_id] = phone
        self._order = list(self._phones)
        self._always: set[str] = set()
        self._table = AvailabilityTable([p.profile for p in phones], config)

    @classmethod
    def from_splits(
        cls, splits: CorpusSplits, config: FleetConfig, *, seed: int
    ) -> Fleet:
        """A phone per training user, or per shard of one (`messages_per_phone`)."""
        users = list(splits.training_users.values())
        if config.max_users is not None:
            users = users[: config.max_users]
        phones = [
            Phone(
                client_id,
                train=train,
                future=future,
                profile=draw_profile(seed, client_id, config),
                seed=seed,
            )
            for user in users
            for client_id, train, future in shards(user, config.messages_per_phone)
        ]
        return cls(phones, config=config)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._phones

    def __iter__(self) -> Iterator[Phone]:
        return (self._phones[c] for c in self._order)

    @property
    def client_ids(self) -> list[str]:
        """Every phone's client_id, in fleet order."""
        return list(self._order)

    def phone(self, client_id: str) -> Phone:
        """The phone named `client_id` (KeyError when there is none)."""
        return self._phones[client_id]

    def eligible(self, simulated_seconds: float, server_round: int) -> list[str]:
        """The phones eligible to train at that moment, in fleet order."""
        mask = self._table.eligible(simulated_seconds, server_round)
        return [c for c, ok in zip(self._order, mask, strict=True) if ok]

    def eligible_share(self, simulated_seconds: float, server_round: int) -> float:
        """The share of the fleet eligible at that moment."""
        if not self._order:
            return 0.0
        return float(self._table.eligible(simulated_seconds, server_round).mean())

    def put(self, phone: Phone, *, always_eligible: bool = False) -> None:
        """Add `phone`, or replace the phone with its client_id.

        An `always_eligible` phone ignores its daily pattern (the demo's phone).
        """
        if phone.client_id not in self._phones:
            self._order.append(phone.client_id)
        self._phones[phone.client_id] = phone
        if always_eligible:
            self._always.add(phone.client_id)
        else:
            self._always.discard(phone.client_id)
        self._table = AvailabilityTable(
            [self._phones[c].profile for c in self._order],
            self.config,
            always=[c in self._always for c in self._order],
        )


def shards(
    user: UserHistory, messages_per_phone: int | None
) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """`(client_id, train, future)` of each phone made from one user's history.

    Without `messages_per_phone` the user is one phone named after them; with it the
    train part is cut into consecutive shards named `user#k` and the future part
    dealt out to them in turn.
    """
    if messages_per_phone is None:
        return [(user.user, user.train, user.future)]
    count = max(1, -(-len(user.train) // messages_per_phone))
    return [
        (
            f"{user.user}#{k}",
            user.train[k * messages_per_phone : (k + 1) * messages_per_phone],
            user.future[k::count],
        )
        for k in range(count)
    ]
