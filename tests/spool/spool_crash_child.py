"""Child process for the crash test: enqueue outcomes in a loop until killed.

Usage: python spool_crash_child.py SPOOL_PATH RUN_ID

Prints ``ok <call_id>`` (flushed) only after the put holding that call returned, i.e.
after its transaction committed. The parent SIGKILLs us at a random moment and then checks
that every printed call is in the file.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from datetime import UTC, datetime

from spool import CallOutcome, Disposition, open_spool


async def main(path: str, run: str) -> None:
    out = sys.stdout
    counter = itertools.count()
    now = datetime.now(UTC)

    def make() -> CallOutcome:
        return CallOutcome(
            source="crash",
            call_id=f"{run}-{next(counter)}",
            disposition=Disposition.BUSY,
            ended_at=now,
        )

    async def single() -> None:
        while True:
            o = make()
            await spool.put(o)
            out.write(f"ok {o.call_id}\n")
            out.flush()

    async def many() -> None:
        while True:
            batch = [make() for _ in range(5)]
            await spool.put_many(batch, cursor=("crash", batch[-1].call_id))
            out.write("".join(f"ok {o.call_id}\n" for o in batch))
            out.flush()

    async with open_spool(path) as spool:
        out.write("ready\n")
        out.flush()
        async with asyncio.TaskGroup() as tg:
            for _ in range(6):
                tg.create_task(single())
            tg.create_task(many())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
