"""Prompt assembly under a token budget, with per-section token counts.

Sections: persona (system), summary, memory (recent events) and the new message. Events carry
their token counts, so fitting memory is a sum. When the total would overflow, the oldest
events go first, then the summary is cut; the user's message is never cut: if it alone does
not fit, `MessageTooLong` is raised and the user is told. A brief prompt (a user near their
token budget) keeps only the newest `events_limit` events; a plain prompt (personalization
off) is a neutral system line and the message, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.domain import Language, MemoryEvent, Role, UserProfile
from engine.errors import MessageTooLong
from engine.ports import ChatMessage, CompletionRequest, TokenCounter

_PERSONA_CACHE_SIZE = 1024

MESSAGE_OVERHEAD_TOKENS = 4
"""Role markers and separators a chat template adds around each message."""

PLAIN_SYSTEM = "You are a helpful assistant."
"""The whole system message of a plain prompt: no persona, no profile, no memory."""
PLAIN_VERSION = "plain"
"""The template version plain prompts report (spans, the response cache's key)."""


@dataclass(frozen=True, slots=True)
class Budget:
    """Token budgets per prompt section (seed 001 TL-00); `reply` bounds the completion.

    The message has no budget of its own: it may use what the persona leaves of `total`.
    """

    persona: int = 200
    memory: int = 800
    summary: int = 300
    total: int = 2000
    reply: int = 512


@dataclass(frozen=True, slots=True)
class Template:
    """A versioned prompt template: `{name}` placeholders per language."""

    version: str
    bodies: dict[str, str]

    def render(self, language: str, **values: str) -> str:
        """The body for `language` with `values` filled in."""
        return self.bodies[language].format(**values)


def parse_template(text: str) -> Template:
    """Parse a template file: a `version:` line, then `## <language>` sections.

    Raises:
        ValueError: no version line, or no section.
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith("version:"):
        raise ValueError("a template file starts with 'version: <string>'")
    version = lines[0].partition(":")[2].strip()
    bodies: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines[1:]:
        if line.startswith("## "):
            current = bodies.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    if not version or not bodies:
        raise ValueError("a template needs a version and at least one '## lang' section")
    return Template(version, {k: "\n".join(v).strip() for k, v in bodies.items()})


@dataclass(frozen=True, slots=True)
class SectionTokens:
    """Tokens each section takes in the final prompt."""

    persona: int
    summary: int
    memory: int
    message: int

    @property
    def total(self) -> int:
        return self.persona + self.summary + self.memory + self.message


@dataclass(frozen=True, slots=True)
class Prompt:
    """A ready chat request plus what went into it."""

    messages: tuple[ChatMessage, ...]
    tokens: SectionTokens
    template_version: str
    events_used: int
    events_dropped: int
    summary_truncated: bool

    def request(self, max_tokens: int) -> CompletionRequest:
        return CompletionRequest(messages=self.messages, max_tokens=max_tokens, purpose="reply")


def fit_text(text: str, budget: int, counter: TokenCounter, *, keep_end: bool = False) -> str:
    """The longest prefix (or suffix) of `text` that counts at most `budget` tokens."""
    if budget <= 0:
        return ""
    if counter.count(text) <= budget:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        part = text[-mid:] if keep_end else text[:mid]
        if counter.count(part) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[-lo:] if keep_end and lo else text[:lo]


@dataclass(frozen=True, slots=True)
class PromptBuilder:
    """Builds reply prompts from a profile, recent events and the new message."""

    persona_template: Template
    summary_template: Template
    counter: TokenCounter
    budget: Budget = Budget()
    _persona_cache: dict[tuple[str, str, str, tuple[str, ...]], tuple[str, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def persona_section(self, profile: UserProfile) -> str:
        return self._persona(profile)[0]

    def _persona(self, profile: UserProfile) -> tuple[str, int]:
        """The persona section and its tokens, rendered and counted once per distinct persona."""
        key = (profile.language, profile.persona, profile.tone, profile.preferred_topics)
        cached = self._persona_cache.get(key)
        if cached is None:
            topics = ", ".join(profile.preferred_topics) or "-"
            text = self.persona_template.render(
                profile.language, persona=profile.persona, tone=profile.tone, topics=topics
            )
            text = fit_text(text, self.budget.persona, self.counter)
            cached = (text, self.counter.count(text))
            if len(self._persona_cache) >= _PERSONA_CACHE_SIZE:
                self._persona_cache.clear()  # distinct personas are few; this is a safety bound
            self._persona_cache[key] = cached
        return cached

    def summary_body_budget(self, language: Language) -> int:
        """The most tokens a stored summary may have and still fit its section uncut."""
        frame = self.counter.count(self.summary_template.render(language, summary=""))
        return self.budget.summary - frame - MESSAGE_OVERHEAD_TOKENS

    def _summary_section(self, profile: UserProfile, room: int) -> tuple[str, int, bool]:
        """The rendered summary, its tokens (at most `room`) and whether the summary was cut."""
        # The template's own words count too, or a tight room overflows the total.
        frame = self.counter.count(self.summary_template.render(profile.language, summary=""))
        body_budget = min(self.budget.summary, room - frame) - MESSAGE_OVERHEAD_TOKENS
        while body_budget > 0:
            body = fit_text(profile.memory_summary, body_budget, self.counter)
            if not body:
                break
            text = self.summary_template.render(profile.language, summary=body)
            tokens = self.counter.count(text) + MESSAGE_OVERHEAD_TOKENS
            if tokens <= room:
                return text, tokens, body != profile.memory_summary
            body_budget -= tokens - room  # a tokenizer that merges across the seam
        return "", 0, True

    def build(
        self,
        profile: UserProfile,
        events: Sequence[MemoryEvent],
        message: str,
        message_tokens: int,
        *,
        events_limit: int | None = None,
    ) -> Prompt:
        """Assemble the prompt for `message` (whose count is `message_tokens`).

        Args:
            events: recent events before the message, oldest first, with token counts.
            events_limit: keep at most this many of the newest events (a brief prompt);
                None: as many as the memory budget holds.

        Raises:
            MessageTooLong: the message alone does not fit what the persona leaves of the total.
        """
        b = self.budget
        offered = len(events)
        if events_limit is not None:
            events = events[max(len(events) - events_limit, 0) :]
        persona, persona_tokens = self._persona(profile)
        persona_tokens += MESSAGE_OVERHEAD_TOKENS
        msg_tokens = message_tokens + MESSAGE_OVERHEAD_TOKENS
        room = b.total - persona_tokens - msg_tokens
        if room < 0:
            raise MessageTooLong(message_tokens, b.total - persona_tokens - MESSAGE_OVERHEAD_TOKENS)
        # The summary is cut only after every event is gone: it takes its budget first.
        summary_text, summary_tokens, truncated = "", 0, False
        if profile.memory_summary:
            summary_text, summary_tokens, truncated = self._summary_section(profile, room)
        memory_room = min(b.memory, room - summary_tokens)

        kept: list[MemoryEvent] = []
        used = 0
        for event in reversed(events):
            cost = event.tokens + MESSAGE_OVERHEAD_TOKENS
            if used + cost > memory_room:
                break
            kept.append(event)
            used += cost
        kept.reverse()
        while kept and kept[0].role == "assistant":  # a reply whose message was dropped
            used -= kept.pop(0).tokens + MESSAGE_OVERHEAD_TOKENS

        system = persona if not summary_text else f"{persona}\n\n{summary_text}"
        messages = [ChatMessage("system", system)]
        messages.extend(alternating([*((e.role, e.content) for e in kept), ("user", message)]))
        return Prompt(
            messages=tuple(messages),
            tokens=SectionTokens(persona_tokens, summary_tokens, used, msg_tokens),
            template_version=self.persona_template.version,
            events_used=len(kept),
            events_dropped=offered - len(kept),
            summary_truncated=truncated,
        )

    def plain(self, message: str, message_tokens: int) -> Prompt:
        """The prompt of a turn without personalization: `PLAIN_SYSTEM` and the message.

        Raises:
            MessageTooLong: the message does not fit what the system line leaves of the total.
        """
        system_tokens = self.counter.count(PLAIN_SYSTEM) + MESSAGE_OVERHEAD_TOKENS
        room = self.budget.total - system_tokens - MESSAGE_OVERHEAD_TOKENS
        if message_tokens > room:
            raise MessageTooLong(message_tokens, room)
        return Prompt(
            messages=(ChatMessage("system", PLAIN_SYSTEM), ChatMessage("user", message)),
            tokens=SectionTokens(system_tokens, 0, 0, message_tokens + MESSAGE_OVERHEAD_TOKENS),
            template_version=PLAIN_VERSION,
            events_used=0,
            events_dropped=0,
            summary_truncated=False,
        )


def alternating(turns: Sequence[tuple[Role, str]]) -> list[ChatMessage]:
    """Chat messages whose roles alternate: consecutive turns of one role (messages folded
    into one turn, a message left unanswered) become one message, lines joined."""
    merged: list[ChatMessage] = []
    for role, content in turns:
        if merged and merged[-1].role == role:
            joined = "\n".join(part for part in (merged[-1].content, content) if part)
            merged[-1] = ChatMessage(role, joined)
        else:
            merged.append(ChatMessage(role, content))
    return merged
