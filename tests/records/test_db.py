"""records.db on SQLite: the first connections to a new file, from several threads or processes
at once, all open it (each switches it to WAL, and a loser of that race is told "database is
locked" at once, without SQLite's busy timeout)."""

import threading

from sqlalchemy import text

from records import db


def test_many_first_connections_to_a_new_file_at_once_all_open(tmp_path):
    failures = []
    for trial in range(300):  # before the retry, about 1 trial in 30 lost a connection
        engines = [db.make_engine(f"sqlite:///{tmp_path}/t{trial}.sqlite") for _ in range(6)]
        start = threading.Barrier(len(engines))

        def connect(engine):
            start.wait()
            try:
                with engine.connect() as connection:
                    assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            except Exception as exc:  # noqa: BLE001 - counted, and shown below
                failures.append((trial, repr(exc)))

        threads = [threading.Thread(target=connect, args=(engine,)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.dispose()
    assert failures == [], failures[:3]
