"""A NOTIFY about new jobs wakes the idle workers of executors serving that queue, and
only them (a reconnection wakes everyone: what was sent meanwhile is lost)."""

from __future__ import annotations

import threading
import time

from spool import db, jobs
from tests.helpers.waiting import wait_for


def test_only_executors_serving_the_queue_wake_up(make_executor, database_url):
    high = make_executor(queues=("high",))
    both = make_executor(queues=("high", "low"))
    stop = threading.Event()
    threads = [threading.Thread(target=e._listen, args=(stop,), daemon=True) for e in (high, both)]
    for thread in threads:
        thread.start()
    try:
        # connecting wakes each once
        wait_for(lambda: high._generation == 1 and both._generation == 1, 10, "listening")
        with db.connect(database_url) as conn:
            conn.execute("select pg_notify(%s, 'low')", (jobs.JOBS_CHANNEL,))
        wait_for(lambda: both._generation == 2, 10, "the low queue's executor woken")
        time.sleep(0.5)  # the notification reached both listeners by now
        assert high._generation == 1  # not its queue: its workers slept on
        with db.connect(database_url) as conn:
            conn.execute("select pg_notify(%s, 'high')", (jobs.JOBS_CHANNEL,))
        wait_for(lambda: high._generation == 2 and both._generation == 3, 10, "high woken")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
