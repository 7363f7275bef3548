"""Phones that join a run while it goes on: the demo's own phone.

The TUI's "this phone" adds the user's messages to a phone of its own. Its history
is the phone's storage, kept under the run directory (`phones/phone_000.json`,
listed in `phones/index.json`), so a resumed run has it too. Additions may come
from another thread while a round runs; they wait here and join the fleet at the
start of the next round, so a round always sees one fixed fleet.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from device_sim.config import FleetConfig
from device_sim.fleet import Fleet
from device_sim.phone import Phone
from device_sim.profile import draw_profile
from models.rundir import RunDir, RunDirError, write_json_atomic

# What each entry of `phones/index.json` holds.
_ENTRY_KEYS = frozenset({"client_id", "file", "pinned"})


def _index_path(run: RunDir) -> Path:
    return run.path / "phones" / "index.json"


def joined_entries(run: RunDir) -> list[dict[str, Any]]:
    """`phones/index.json`'s entries: {"client_id", "file", "pinned"} ([]: none).

    Raises:
        RunDirError: the index exists but cannot be read.
    """
    index = _index_path(run)
    if not index.exists():
        return []
    try:
        payload = json.loads(index.read_text(encoding="utf-8"))
        entries = [dict(entry) for entry in payload["phones"]]
        if any(not _ENTRY_KEYS <= entry.keys() for entry in entries):
            raise KeyError(f"an entry lacks one of {sorted(_ENTRY_KEYS)}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"{index}: unreadable ({error})") from None
    return entries


def joined_history(run: RunDir, client_id: str) -> list[str]:
    """The training texts phone `client_id` stored when it joined ([]: it never did).

    Raises:
        RunDirError: the index or the phone's file cannot be read.
    """
    for entry in joined_entries(run):
        if entry["client_id"] != client_id:
            continue
        path = run.path / "phones" / str(entry["file"])
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return [str(text) for text in payload["train"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunDirError(f"{path}: not a phone's history ({error})") from None
    return []


class JoinedPhones:
    """The phones added to a run, saved as they come, applied between rounds."""

    def __init__(self, run: RunDir, *, fleet_config: FleetConfig, seed: int) -> None:
        self.run = run
        self.fleet_config = fleet_config
        self.seed = seed
        self.pinned: list[str] = []  # always eligible and always selected
        self._entries: list[dict[str, Any]] = []  # {"client_id", "file", "pinned"}
        self._pending: list[tuple[Phone, bool]] = []
        self._lock = threading.Lock()

    @property
    def index_path(self) -> Path:
        return _index_path(self.run)

    def new_phone(self, client_id: str, texts: list[str]) -> Phone:
        """A phone with `texts` as its training history and no future text."""
        return Phone(
            client_id,
            train=texts,
            future=(),
            profile=draw_profile(self.seed, client_id, self.fleet_config),
            seed=self.seed,
        )

    def add(
        self, fleet: Fleet, client_id: str, texts: list[str], *, pinned: bool
    ) -> None:
        """Append `texts` to phone `client_id` (new or not) and save its history."""
        with self._lock:
            phone = self._latest(fleet, client_id)
            phone = (
                self.new_phone(client_id, texts)
                if phone is None
                else phone.with_texts(texts)
            )
            entry = self._entry(client_id, pinned)
            phone.save(self.run.path / "phones" / entry["file"])
            write_json_atomic(self.index_path, {"phones": self._entries})
            self._pending.append((phone, pinned))

    def _latest(self, fleet: Fleet, client_id: str) -> Phone | None:
        for phone, _ in reversed(self._pending):
            if phone.client_id == client_id:
                return phone
        return fleet.phone(client_id) if client_id in fleet else None

    def _entry(self, client_id: str, pinned: bool) -> dict[str, Any]:
        for entry in self._entries:
            if entry["client_id"] == client_id:
                entry["pinned"] = pinned
                return entry
        entry = {
            "client_id": client_id,
            "file": f"phone_{len(self._entries):03d}.json",
            "pinned": pinned,
        }
        self._entries.append(entry)
        return entry

    def apply(self, fleet: Fleet) -> None:
        """Put the waiting phones into `fleet` (call between rounds)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for phone, pinned in pending:
            fleet.put(phone, always_eligible=pinned)
            if pinned and phone.client_id not in self.pinned:
                self.pinned.append(phone.client_id)
            if not pinned and phone.client_id in self.pinned:
                self.pinned.remove(phone.client_id)

    def load(self, fleet: Fleet) -> None:
        """Read back every phone that joined the run and put it into `fleet`."""
        entries = joined_entries(self.run)
        if not entries:
            return
        with self._lock:
            self._entries = entries
            for entry in entries:
                phone = Phone.load(
                    self.run.path / "phones" / entry["file"],
                    profile=draw_profile(
                        self.seed, entry["client_id"], self.fleet_config
                    ),
                    seed=self.seed,
                )
                self._pending.append((phone, bool(entry["pinned"])))
        self.apply(fleet)
