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
        return self.run.path / "phones" / "index.json"

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
        if not self.index_path.exists():
            return
        try:
            entries = list(json.loads(self.index_path.read_text())["phones"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunDirError(f"{self.index_path}: unreadable ({error})") from None
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
