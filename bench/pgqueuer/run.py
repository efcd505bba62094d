"""PGQueuer's side of the claim benchmark. It runs in PGQueuer's own virtual
environment (made by bench/peers.py), so it imports nothing of datarun, and it is not
a module of the bench package.

    python run.py URL JOBS CONSUMERS BATCH

Installs PGQueuer's schema into the (empty) database at URL, enqueues JOBS no-op jobs,
then drains them with CONSUMERS queue managers in one process (asyncio, as PGQueuer
runs), each with its own connection and its own dequeue loop, BATCH jobs per dequeue.
Prints one JSON line: the seconds until the last job ran, and the jobs run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode


async def main(url: str, jobs: int, consumers: int, batch: int) -> None:
    conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    for start in range(0, jobs, 10_000):
        n = min(10_000, jobs - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    await conn.close()
    ran = 0
    last = 0.0  # when the last job ran: drain mode then waits out a dequeue timeout

    async def consumer() -> None:
        connection = await asyncpg.connect(url)
        manager = QueueManager(Queries(AsyncpgDriver(connection)))

        @manager.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal ran, last
            ran += 1
            last = time.perf_counter()

        await manager.run(
            dequeue_timeout=timedelta(seconds=1), batch_size=batch, mode=QueueExecutionMode.drain
        )
        await connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(consumer() for _ in range(consumers)))
    print(json.dumps({"seconds": last - start, "ran": ran}))


if __name__ == "__main__":
    url, jobs, consumers, batch = sys.argv[1], *map(int, sys.argv[2:5])
    asyncio.run(main(url, jobs, consumers, batch))
