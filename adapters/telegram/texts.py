"""What the butler says at the Telegram front door, in Russian and English.

The conversation itself comes from the model (or `engine.persona` when it cannot speak); these
are the fixed lines around it: greetings, help, confirmations and polite refusals.
"""

from __future__ import annotations

from typing import Literal

from engine.domain import Language

TextKind = Literal[
    "start_new",
    "start_again",
    "help",
    "forget_ask",
    "forget_yes",
    "forget_no",
    "forget_done",
    "forget_cancelled",
    "unsupported",
    "not_allowed",
    "voice_too_big",
    "voice_too_long",
    "heard",
    "correction",
]

_TEXTS: dict[TextKind, dict[Language, str]] = {
    "start_new": {
        "ru": (
            "Добрый день, {name}. Позвольте представиться: ваш дворецкий. "
            "Пишите или присылайте голосовые — я выслушаю, запомню главное и отвечу "
            "со всей возможной учтивостью. Если что-то понадобится, /help к вашим услугам."
        ),
        "en": (
            "Good day, {name}. Allow me to introduce myself: your butler. "
            "Write to me or send a voice note: I shall listen, remember what matters and reply "
            "with all due courtesy. Should you need guidance, /help is at your service."
        ),
    },
    "start_again": {
        "ru": "С возвращением, {name}. Я весь внимание — и, смею заметить, ничего не забыл.",
        "en": (
            "Welcome back, {name}. I am all attention and, if I may say so, have forgotten nothing."
        ),
    },
    "help": {
        "ru": (
            "Чем могу служить:\n"
            "• пишите как обычно — я отвечу и запомню контекст беседы;\n"
            "• голосовые сообщения до {minutes} мин. я расшифрую и отвечу на них;\n"
            "• исправленное сообщение я учту, если ещё не ответил, или приму как поправку;\n"
            "• /forget — стереть всё, что я о вас храню (попрошу подтверждения);\n"
            "• /start — поздороваться заново.\n"
            "Если мой источник вдохновения ненадолго отлучится, я всё равно отвечу и вернусь "
            "к полноценной беседе сам."
        ),
        "en": (
            "How I may be of service:\n"
            "• write as usual: I reply and keep the thread of our conversation;\n"
            "• voice notes up to {minutes} min. are transcribed and answered;\n"
            "• an edited message is taken into account if I have not answered yet, or as a "
            "correction otherwise;\n"
            "• /forget erases everything I keep about you (I shall ask you to confirm);\n"
            "• /start greets you afresh.\n"
            "Should my source of inspiration step out, I still answer and resume proper "
            "conversation by myself."
        ),
    },
    "forget_ask": {
        "ru": (
            "Вы желаете, чтобы я забыл всё: профиль, историю бесед и заметки о вас? "
            "Это необратимо, как пролитый чай."
        ),
        "en": (
            "You wish me to forget everything: your profile, our conversations and my notes? "
            "It cannot be undone, much like spilt tea."
        ),
    },
    "forget_yes": {"ru": "Да, забудьте всё", "en": "Yes, forget everything"},
    "forget_no": {"ru": "Нет, оставьте", "en": "No, keep it"},
    "forget_done": {
        "ru": "Готово. Я всё забыл — профессиональная деформация дворецкого. Рад знакомству.",
        "en": (
            "Done. I have forgotten everything: a butler's professional discretion. "
            "Delighted to meet you."
        ),
    },
    "forget_cancelled": {
        "ru": "Как скажете. Всё остаётся на своих местах.",
        "en": "As you wish. Everything stays exactly where it was.",
    },
    "unsupported": {
        "ru": (
            "Прошу прощения, но с этим я обращаться не обучен. Я читаю текст и слушаю "
            "голосовые сообщения."
        ),
        "en": "Forgive me, I am not trained to handle that. I read text and listen to voice notes.",
    },
    "not_allowed": {
        "ru": "Прошу прощения, я служу в частном доме и не могу принять ваши поручения.",
        "en": "I beg your pardon: I serve a private household and cannot take your instructions.",
    },
    "voice_too_big": {
        "ru": "Эта запись слишком велика для меня (больше {mb} МБ). Не могли бы вы сократить её?",
        "en": "That recording is too large for me (over {mb} MB). Might you shorten it?",
    },
    "voice_too_long": {
        "ru": (
            "Запись длится {seconds} с, а я выслушиваю не более {limit} с. "
            "Будьте любезны, разделите её на части."
        ),
        "en": (
            "The recording lasts {seconds} s and I listen to at most {limit} s. "
            "Kindly split it into parts."
        ),
    },
    "heard": {"ru": "Я расслышал: «{text}»", "en": "I heard: “{text}”"},
    "correction": {
        "ru": "Поправка к моему предыдущему сообщению: {text}",
        "en": "A correction to my previous message: {text}",
    },
}


def text(kind: TextKind, language: Language, **values: object) -> str:
    """The line `kind` in `language`, with `values` filled in."""
    return _TEXTS[kind][language].format(**values)


def language_of(code: str | None) -> Language | None:
    """Telegram's `language_code` (an IETF tag such as "ru" or "en-GB") as a Butler language."""
    prefix = (code or "").split("-", 1)[0].lower()
    if prefix == "ru":
        return "ru"
    if prefix == "en":
        return "en"
    return None
