"""`FallbackChain`: one `LanguageModel` out of a primary and a last-resort fallback.

The HTTP chain is asked first; when it fails as a whole, the in-process model answers. The
`Completion.endpoint` of a fallback answer counts on from the primary's endpoints, so the
fallback metric and the `llm.chat` span say which link answered.
"""

from __future__ import annotations

import logging

from engine.errors import LLMRejected, LLMUnavailable
from engine.ports import Completion, CompletionRequest, LanguageModel

log = logging.getLogger(__name__)


class FallbackChain:
    """Primary first, then the fallback; the actor degrades only when both fail.

    `primary_endpoints` is how many endpoints the primary has (the fallback's answers carry
    endpoint numbers from there on). A primary that refused us (`LLMRejected`) is also passed
    over: a wrong key or model name on the server should not silence the butler.
    """

    def __init__(
        self, primary: LanguageModel, fallback: LanguageModel, *, primary_endpoints: int
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._offset = primary_endpoints

    async def complete(self, request: CompletionRequest) -> Completion:
        """Raises: the primary's error when the fallback fails too."""
        try:
            return await self._primary.complete(request)
        except (LLMUnavailable, LLMRejected) as primary_error:
            log.warning(
                "primary LLM failed (%s); asking the local model", type(primary_error).__name__
            )
            try:
                completion = await self._fallback.complete(request)
            except (LLMUnavailable, LLMRejected) as exc:
                raise primary_error from exc
        return Completion(
            completion.text,
            completion.model,
            self._offset + completion.endpoint,
            completion.prompt_tokens,
            completion.completion_tokens,
        )

    async def probe(self) -> bool:
        """Whether the chain can answer: the primary, or else the fallback."""
        return await self._primary.probe() or await self._fallback.probe()

    @property
    def problem(self) -> str | None:
        """Why the primary's last probe failed, when it said (a refused API key)."""
        problem = getattr(self._primary, "problem", None)
        return problem if isinstance(problem, str) else None

    async def close(self) -> None:
        for model in (self._primary, self._fallback):
            closer = getattr(model, "close", None)
            if closer is not None:
                await closer()
