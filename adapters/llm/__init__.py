"""Language-model adapters: implementations of `engine.ports.LanguageModel`."""

from adapters.llm.openai_http import LLMSettings, OpenAIChatModel

__all__ = ["LLMSettings", "OpenAIChatModel"]
