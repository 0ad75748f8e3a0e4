"""Keys of the LLM response cache (seed 004): what makes two model calls the same call.

key = SHA-256 over the prompt template's version, the model, a fingerprint of the user's
profile (persona, tone, language, topics, summary) and the whole request (purpose, budget,
temperature and every message). A changed template, model, profile or history is a new key.
A plain prompt (personalization off) has no profile: its key has no profile part.
"""

from __future__ import annotations

import hashlib

from engine.domain import UserProfile
from engine.ports import CompletionRequest


def profile_fingerprint(profile: UserProfile) -> str:
    """A hash of everything in the profile that shapes an answer."""
    digest = hashlib.sha256()
    for part in (
        profile.language,
        profile.persona,
        profile.tone,
        *profile.preferred_topics,
        "\x1e",
        profile.memory_summary,
        profile.summary_through,
    ):
        digest.update(part.encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


def cache_key(
    *,
    template_version: str,
    model: str,
    profile: UserProfile | None,
    request: CompletionRequest,
) -> str:
    digest = hashlib.sha256()
    head = (
        template_version,
        model,
        "" if profile is None else profile_fingerprint(profile),
        request.purpose,
        str(request.max_tokens),
        repr(request.temperature),
    )
    for part in head:
        digest.update(part.encode())
        digest.update(b"\x1f")
    for message in request.messages:
        digest.update(message.role.encode())
        digest.update(b"\x1f")
        digest.update(message.content.encode())
        digest.update(b"\x1e")
    return digest.hexdigest()
