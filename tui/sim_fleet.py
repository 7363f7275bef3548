"""`DemoFleet` over a `coordinator.run.simulation.Simulation` in this process.

Rounds run in the app's worker thread; everything the UI thread calls here reads
copies (`Simulation.global_model` is a fresh model each call) or goes through the
simulation's own lock (`add_phone`), so a round in progress never tears a model.
With a live central baseline (`tui.live_central`), each round ends with the
central side caught up to the fleet's training tokens: the catch-up starts on a
thread of its own when the round's evaluation starts (the demo's training
process runs one torch thread and the machine has a core for each), and the
round returns once both are done.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from torch import nn

from central.paced import PacedCentral
from coordinator.events import EvaluationStarted, Event
from coordinator.privacy.released import figure
from coordinator.run.joined import joined_history
from coordinator.run.simulation import Simulation
from device_sim.personal_model import model_of, personalize_texts
from device_sim.personalize import PersonalizationConfig
from device_sim.profile import DeviceProfile
from models.metrics import EvalMetrics
from models.rundir import RunDir
from models.weights import parameters_of
from tui.fleet import THIS_PHONE, PhoneFacts
from tui.freed_memory import give_back_freed_memory
from tui.live_central import CentralView, read_central, unigram_view

# A phone's future messages measured when it is opened, and the keystroke-savings
# share of them: enough for a stable figure in well under a second.
PHONE_EVAL_MESSAGES = 50
PHONE_KEYSTROKE_TEXTS = 20


def this_phone_messages(run: RunDir) -> list[str]:
    """This phone's stored history, read back from its own storage in the run."""
    return joined_history(run, THIS_PHONE)


def profile_rows(profile: DeviceProfile) -> list[tuple[str, str]]:
    """A device profile as (name, value) rows a person can read."""
    start = profile.charge_start_hour
    return [
        ("time zone", f"UTC{profile.timezone_hours:+.0f}"),
        (
            "charges",
            f"from {int(start):02d}:{int(start % 1 * 60):02d} local, "
            f"{profile.charge_hours:.1f} h",
        ),
        ("on Wi-Fi", f"{profile.unmetered_prob:.0%} of nights"),
        ("speed", f"{1 / profile.speed_factor:.2f}x a median phone"),
        ("bandwidth", f"{profile.bandwidth_bytes * 8 / 1e6:.1f} Mbit/s"),
        ("faulty", "yes: sends corrupt updates" if profile.faulty else "no"),
    ]


def metric_rows(metrics: EvalMetrics) -> list[tuple[str, str]]:
    """Evaluation metrics as (name, value) rows."""
    return [
        ("top-1", f"{metrics.top1:.1%}"),
        ("top-3", f"{metrics.top3:.1%}"),
        ("keys saved", f"{metrics.keystroke_savings:.1%}"),
        ("perplexity", f"{metrics.perplexity:,.0f}"),
    ]


class SimulationFleet:
    """The demo's view of a simulation, with this phone's history."""

    def __init__(
        self,
        simulation: Simulation,
        *,
        name: str | None = None,
        central: PacedCentral | None = None,
    ) -> None:
        """Args:
        central: The live central baseline, trained after each round; None
            trains none.
        """
        self.simulation = simulation
        self.central = central
        self.name = name or str(simulation.run.path)
        self.tokenizer = simulation.tokenizer
        self._messages = this_phone_messages(simulation.run)
        self._catching_up: Future[Any] | None = None
        self._central_thread: ThreadPoolExecutor | None = None
        if central is not None:
            self._central_thread = ThreadPoolExecutor(1, thread_name_prefix="central")
            self._chain_events()

    def _chain_events(self) -> None:
        """Start the central catch-up as the round's evaluation starts."""
        previous = self.simulation.on_event

        def on_event(event: Event) -> None:
            if isinstance(event, EvaluationStarted):
                self._start_catch_up(event.server_round, event.tokens_total)
            if previous is not None:
                previous(event)

        self.simulation.on_event = on_event

    def _start_catch_up(self, server_round: int, tokens_total: int) -> None:
        assert self.central is not None and self._central_thread is not None
        self._catching_up = self._central_thread.submit(
            self.central.catch_up, tokens_total, server_round=server_round
        )

    def _finish_catch_up(self) -> None:
        """Wait for the round's catch-up; its error, if any, is the round's."""
        catching_up, self._catching_up = self._catching_up, None
        if catching_up is not None:
            catching_up.result()

    @property
    def server_round(self) -> int:
        return self.simulation.server_round

    def records(self) -> list[dict[str, Any]]:
        return [r for r in self.simulation.history() if "server_round" in r]

    def global_snapshot(self) -> nn.Module:
        return self.simulation.global_model

    def run_round(self) -> dict[str, Any]:
        """One round, and the central side trained to the fleet's tokens."""
        try:
            record = self.simulation.run_round()
            if self.central is not None and self._catching_up is None:
                # Not evaluated this round: nothing to overlap the catch-up with.
                tokens_total = int(figure(record, "tokens_total"))
                self._start_catch_up(int(record["server_round"]), tokens_total)
        finally:
            self._finish_catch_up()
        give_back_freed_memory()
        return record

    def train_round(self) -> tuple[dict[str, Any], nn.Module]:
        record = self.run_round()
        return record, self.simulation.global_model

    def central_view(self) -> CentralView | None:
        if self.central is None:
            return unigram_view(self.simulation.run.path)
        return read_central(self.simulation.run.path)

    def model_at(self, server_round: int) -> nn.Module:
        model = self.simulation.model_at(server_round)
        if model is None:
            raise LookupError(f"round {server_round}'s model was not kept")
        return model

    def kept_rounds(self) -> list[int]:
        return self.simulation.run.checkpoint_steps()

    def my_messages(self) -> list[str]:
        return list(self._messages)

    def send(self, text: str) -> list[str]:
        self.simulation.add_phone(THIS_PHONE, [text])
        self._messages.append(text)
        return self.my_messages()

    def personalize(self) -> tuple[nn.Module, int, int] | None:
        """This phone's personal model: exactly what `fedtype personalize`
        measures on every phone (the gated fine-tune, then its memory)."""
        texts = self.my_messages()
        if not texts:
            return None
        simulation = self.simulation
        model = simulation.global_model
        personal = personalize_texts(
            texts,
            parameters_of(model),
            model=model,
            tokenizer=self.tokenizer,
            config=PersonalizationConfig.from_local(simulation.federation.local),
            seed=simulation.federation.seed,
            client_id=THIS_PHONE,
        )
        return model_of(personal, model).eval(), simulation.server_round, len(texts)

    def phone_ids(self) -> list[str]:
        ids = self.simulation.fleet.client_ids
        if self._messages and THIS_PHONE not in ids:
            ids.append(THIS_PHONE)
        return ids

    def phone_facts(self, client_id: str) -> PhoneFacts:
        fleet = self.simulation.fleet
        if client_id not in fleet:
            return PhoneFacts(client_id, [("joins", "at the next round")], 0, None)
        phone = fleet.phone(client_id)
        server_round = self.simulation.server_round
        metrics = phone.evaluate(
            self.simulation.global_model,
            tokenizer=self.tokenizer,
            max_messages=PHONE_EVAL_MESSAGES,
            keystroke_texts=PHONE_KEYSTROKE_TEXTS,
        )
        return PhoneFacts(
            client_id=client_id,
            profile=profile_rows(phone.profile),
            future_messages=phone.future_size(PHONE_EVAL_MESSAGES),
            metrics=None if metrics is None else metric_rows(metrics),
            server_round=server_round,
        )

    def close(self) -> None:
        # A catch-up still running is left behind, as a round on its thread is:
        # the baseline saves atomically, and its resume drops what was unsaved.
        if self._central_thread is not None:
            self._central_thread.shutdown(wait=False, cancel_futures=True)
        self.simulation.close()
