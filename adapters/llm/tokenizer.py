"""Token counting with the served model's own `tokenizer.json` (Hugging Face `tokenizers`)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class HFTokenizerCounter:
    """A `TokenCounter` that counts exactly what the model's tokenizer produces."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise ValueError(f"cannot load tokenizer from {path}") from exc

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
