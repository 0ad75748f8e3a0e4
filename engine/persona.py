"""The butler's fixed lines: what he says when the model cannot speak for him.

Every line exists in Russian and English; `line()` picks by the profile's language and varies
the wording deterministically by a seed so repeated apologies do not read like a machine.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from engine.domain import Language

LineKind = Literal[
    "degraded", "busy", "too_long", "error", "voice_rejected", "store_down", "budget_spent"
]

_LINES: dict[LineKind, dict[Language, tuple[str, ...]]] = {
    "degraded": {
        "ru": (
            "Прошу прощения, сэр: мой источник вдохновения временно отлучился. "
            "Ваше сообщение записано, и я вернусь к полноценной беседе, как только он соизволит "
            "вернуться.",
            "Осмелюсь доложить, мыслительный аппарат особняка на техобслуживании. "
            "Я всё запомнил и отвечу как подобает чуть позже.",
            "Тысяча извинений: мои мысли заняты чем-то чрезвычайно британским и непредвиденным. "
            "Сообщение сохранено, попробуйте спросить меня снова через минуту.",
        ),
        "en": (
            "My apologies, sir: my source of inspiration has briefly stepped out. "
            "Your message is noted, and I shall resume proper conversation the moment it returns.",
            "If I may, the manor's thinking apparatus is undergoing maintenance. "
            "I have noted everything and shall answer properly shortly.",
            "A thousand pardons: something unforeseen and terribly British has my attention. "
            "Your message is kept; do ask me again in a minute.",
        ),
    },
    "busy": {
        "ru": (
            "Одну минуту, сэр: я ещё разбираюсь с вашими предыдущими поручениями. "
            "Будьте любезны повторить это сообщение чуть позже.",
        ),
        "en": (
            "One moment, sir: I am still attending to your previous requests. "
            "Kindly send this one again shortly.",
        ),
    },
    "too_long": {
        "ru": (
            "Сэр, это послание длиннее, чем я способен удержать в голове за раз "
            "(около {tokens} токенов при пределе {budget}). Не сочтите за труд разделить его на "
            "части.",
        ),
        "en": (
            "Sir, that missive is longer than I can hold in mind at once "
            "(about {tokens} tokens against a limit of {budget}). Would you kindly split it?",
        ),
    },
    "error": {
        "ru": (
            "Прошу прощения, сэр, что-то пошло не по протоколу. Ваше сообщение сохранено; "
            "позвольте попросить вас повторить вопрос.",
        ),
        "en": (
            "I do beg your pardon, sir, something went off protocol. Your message is kept; "
            "may I ask you to repeat the question?",
        ),
    },
    "voice_rejected": {
        "ru": (
            "Увы, сэр, я не смог разобрать это голосовое сообщение: {reason}. "
            "Не откажите в любезности повторить или написать текстом.",
        ),
        "en": (
            "Alas, sir, I could not make out that voice note: {reason}. "
            "Would you kindly repeat it or type it instead?",
        ),
    },
    # The one store-down line: the message comes back by itself (Telegram delivers the
    # update again, or it is stored and the recovery answers it), so nobody is asked to resend.
    "store_down": {
        "ru": (
            "Тысяча извинений, сэр: архив особняка временно недоступен. Я вернусь к вашему "
            "сообщению, как только он откроется.",
        ),
        "en": (
            "A thousand pardons, sir: the manor's archive is briefly out of reach. I shall "
            "return to your message as soon as it opens.",
        ),
    },
    # The token budget is spent (seed 003): no model call until `{when}`, the renewal.
    "budget_spent": {
        "ru": (
            "Осмелюсь доложить, сэр: отпущенный на {period} запас моих размышлений исчерпан; "
            "даже дворецкому приходится вести счёт. Он обновится {when}, и тогда я снова "
            "к вашим услугам в полной мере.",
            "Прошу прощения, сэр, но бюджет особняка на мои рассуждения в этот {period} "
            "израсходован до последнего пенни. Счёт обнулится {when}; до тех пор позвольте "
            "ограничиться почтительным поклоном.",
        ),
        "en": (
            "If I may, sir: the allowance of my deliberations for this {period} is spent; even "
            "a butler must keep accounts. It renews {when}, whereupon I shall be entirely at "
            "your service again.",
            "I do beg your pardon, sir, but the household's budget for my musings this "
            "{period} is spent to the last penny. The ledger is cleared {when}; until then, "
            "permit me a respectful bow.",
        ),
    },
}


def variants(kind: LineKind, language: Language) -> tuple[str, ...]:
    """Every wording of a line (unformatted), for checks that a reply is one of them."""
    return _LINES[kind][language]


def line(kind: LineKind, language: Language, seed: str = "", **values: object) -> str:
    """The butler's line of `kind` in `language`, one variant chosen by `seed`."""
    variants = _LINES[kind][language]
    text = variants[sum(map(ord, seed)) % len(variants)]
    return text.format(**values) if values else text


_AUDIO_PROBLEMS: dict[str, dict[Language, str]] = {
    "empty": {"ru": "запись пуста", "en": "the recording is empty"},
    "corrupt": {"ru": "запись повреждена", "en": "the recording is damaged"},
    "cut_short": {"ru": "запись оборвалась", "en": "the recording was cut short"},
    "silent": {"ru": "в ней не слышно речи", "en": "I hear no speech in it"},
    "unclear": {"ru": "я не разобрал ни слова", "en": "I could not make out any words"},
    "too_long": {
        "ru": "она длиннее, чем я успеваю выслушать",
        "en": "it is longer than I may listen to",
    },
    "lost": {"ru": "запись не сохранилась", "en": "the recording is no longer available"},
    "busy": {"ru": "я был занят другими записями", "en": "I was busy with other recordings"},
}


def audio_problem(problem: str, language: Language) -> str:
    """What was wrong with a voice note, as the butler says it (`BadAudio.problem`)."""
    return _AUDIO_PROBLEMS.get(problem, _AUDIO_PROBLEMS["corrupt"])[language]


_MONTHS: dict[Language, tuple[str, ...]] = {
    "ru": (
        "января", "февраля", "марта", "апреля", "мая", "июня",
        "июля", "августа", "сентября", "октября", "ноября", "декабря",
    ),
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
}  # fmt: skip
_PERIODS: dict[str, dict[Language, str]] = {
    "day": {"ru": "день", "en": "day"},
    "month": {"ru": "месяц", "en": "month"},
}


def budget_spent(period: str, renews_at: datetime, language: Language, seed: str = "") -> str:
    """The butler's line for a spent budget of `period` (day, month) renewing at `renews_at`."""
    moment = renews_at.astimezone(UTC)
    month = _MONTHS[language][moment.month - 1]
    if language == "ru":
        when = f"{moment.day} {month} в {moment:%H:%M} UTC"
    else:
        when = f"on {moment.day} {month} at {moment:%H:%M} UTC"
    return line("budget_spent", language, seed, period=_PERIODS[period][language], when=when)
