"""`butler db migrate|export PATH|import PATH` on the store named by `BUTLER_STORE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO, cast

from adapters.bootstrap.settings import Settings
from adapters.bootstrap.wiring import open_store, store_name
from adapters.storage.dump import DumpableStore, DumpError, export_store, import_store


async def main(settings: Settings, args: argparse.Namespace) -> int:
    return await db_command(settings, args.db_command, getattr(args, "path", None), out=sys.stdout)


async def db_command(settings: Settings, command: str, path: Path | None, *, out: TextIO) -> int:
    """Run one verb; 0 on success, 2 when the dump cannot be read or written."""
    store = cast(DumpableStore, await open_store(settings))  # opening migrates
    try:
        if command == "migrate":
            print(f"butler: the store is migrated: {store_name(settings)}", file=out)
            return 0
        assert path is not None
        if command == "export" and not path.parent.is_dir():
            print(
                f"butler: cannot export {path}: the folder {path.parent} does not exist;"
                " no dump was written",
                file=sys.stderr,
            )
            return 2
        try:
            if command == "export":
                counts = await export_store(store, path)
            else:
                counts = await import_store(store, path)
        except (DumpError, OSError) as exc:
            written = "nothing was written" if command == "import" else "no dump was written"
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"butler: cannot {command} {path}: {reason}; {written}", file=sys.stderr)
            return 2
    finally:
        await store.close()
    print(f"butler: {command}ed {counts.profiles} profiles and {counts.events} events", file=out)
    return 0
