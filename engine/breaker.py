"""The per-actor circuit breaker that decides between asking the LLM and the canned reply.

Closed: ask the model. Open: answer in persona without asking until the cool-down passes.
Half-open (open and cooled down): the next turn or a background probe asks the primary again.
The cool-down doubles on each failed probe up to a ceiling, so a long outage costs few probes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Breaker:
    """Breaker state; times are monotonic seconds given by the caller."""

    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0
    open: bool = False
    opened_at: float = 0.0
    current_cooldown_s: float = 0.0

    def trip(self, now: float) -> None:
        """The model failed: open, or stay open with a longer cool-down."""
        self.current_cooldown_s = (
            min(self.current_cooldown_s * 2, self.max_cooldown_s) if self.open else self.cooldown_s
        )
        self.open = True
        self.opened_at = now

    def close(self) -> None:
        """The model answered: back to normal."""
        self.open = False
        self.current_cooldown_s = 0.0

    def may_try(self, now: float) -> bool:
        """Whether a request may go to the model now (closed, or half-open)."""
        return not self.open or now - self.opened_at >= self.current_cooldown_s

    def seconds_until_probe(self, now: float) -> float | None:
        """Seconds until a half-open probe is due; None while closed."""
        if not self.open:
            return None
        return max(0.0, self.opened_at + self.current_cooldown_s - now)
