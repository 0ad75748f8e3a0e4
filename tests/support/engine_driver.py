"""A plain-text front door for tests of several Butler processes on one store:
`python -m tests.support.engine_driver` runs the real engine as a service would
(`open_app(..., recover=True)`, settings from the `BUTLER_*` variables), takes one message
per stdin line (`<user id>\\t<text>`) and prints, one line each, tab-separated:

    ready     <owner id>             once the engine runs
    accepted  <user id>  <event id>  the message is stored (or handed to its owner)
    repeated  <user id>  <event id>  ... was stored already
    refused   <user id>  <reason>    not stored: the sender would send it again
    reply     <user id>  <reply to>  a reply handed to this front door

It exits at the end of stdin, after draining.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

from actors.tickets import Accepted, Rejected, Repeated
from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import open_app
from engine.errors import ButlerError
from engine.ports import OutgoingReply


def say(*fields: str) -> None:
    print("\t".join(fields), flush=True)


class PrintingSink:
    async def deliver(self, reply: OutgoingReply) -> str:
        say("reply", reply.user_id, reply.reply_to)
        return "printed"


async def lines() -> asyncio.Queue[str | None]:
    """stdin's lines on a daemon thread, so the end of the engine never waits on a read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="driver-stdin", daemon=True).start()
    return queue


async def main() -> int:
    settings = Settings.from_env(os.environ)
    async with open_app(settings, sink=PrintingSink(), recover=True) as app:
        owner = getattr(app.registry.leases.ownership, "owner", "")
        say("ready", str(owner))
        queue = await lines()
        while (line := await queue.get()) is not None:
            user_id, _, text = line.partition("\t")
            try:
                ticket = await app.registry.tell_text(user_id, text)
            except ButlerError as exc:
                say("refused", user_id, type(exc).__name__)
                continue
            if isinstance(ticket, Accepted):
                say("accepted", user_id, ticket.event_id)
            elif isinstance(ticket, Repeated):
                say("repeated", user_id, ticket.event_id)
            elif isinstance(ticket, Rejected):
                say("refused", user_id, "busy")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
