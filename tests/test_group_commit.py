"""Runs that finish together are stored in one transaction (a group commit), without waiting
for any run that has not finished: two runs of one endpoint never share one, and a run that
fails to store fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlite_utils import Database

from tests.conftest import FakeClock
from tests.test_serving import ROOT, Server
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.endpoint import Endpoint, Probe
from watchdog.result import Run
from watchdog.store import Store, StoreError
from watchdog.store.recorder import Recorded


def config(tmp_path: Path, probes: list[tuple[str, str]]) -> Config:
    names = sorted({endpoint for endpoint, _ in probes})
    path = tmp_path / "config.yaml"
    path.write_text(
        "storage: {path: w.db, csv_dir: reports}\nendpoints:\n"
        + "".join(
            f'  - {{name: {n}, api: openai-chat, base_url: "http://{n}.test"}}\n' for n in names
        )
        + "probes:\n"
        + "".join(
            f'  - {{endpoint: {e}, golden_set: "{ROOT}/golden_sets/{g}.yaml", stream: false}}\n'
            for e, g in probes
        )
    )
    return load_config(path)


async def runs(cfg: Config, client: httpx.AsyncClient) -> dict[Probe, Run]:
    """Each probe's run, asked before the test: then every run finishes in the same turn."""
    daemon = Daemon(cfg, client, Store.open(":memory:"), FakeClock())
    return {p: await daemon.runner.run(p) for p in cfg.probes}


class Commits:
    """Counts the transactions a store commits."""

    def __init__(self, store: Store):
        self.count = 0
        store.db.conn.set_trace_callback(self.saw)

    def saw(self, statement: str) -> None:
        self.count += statement.strip().upper() == "COMMIT"


@pytest.fixture
def client() -> Iterator[httpx.AsyncClient]:
    yield httpx.AsyncClient(transport=httpx.MockTransport(Server().handle))


async def stored_together(
    tmp_path: Path,
    client: httpx.AsyncClient,
    probes: list[tuple[str, str]],
    prepare: Callable[[Daemon], None] = lambda daemon: None,
) -> tuple[Daemon, Commits, list[Run | BaseException]]:
    cfg = config(tmp_path, probes)
    done = await runs(cfg, client)
    daemon = Daemon(cfg, client, Store.open(tmp_path / "w.db"), FakeClock())
    prepare(daemon)

    async def ran(probe: Probe) -> Run:
        return done[probe]

    daemon.runner.run = ran  # type: ignore[method-assign]
    commits = Commits(daemon.store)
    got = await asyncio.gather(*(daemon.probe_once(p) for p in cfg.probes), return_exceptions=True)
    return daemon, commits, got


def stored(daemon: Daemon) -> list[str]:
    return [r["endpoint"] for r in daemon.store.db.query("select distinct endpoint from results")]


async def test_runs_that_finish_together_share_one_transaction(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    probes = [("a", "default"), ("b", "default"), ("c", "default")]
    daemon, commits, _ = await stored_together(tmp_path, client, probes)
    assert commits.count == 1
    assert sorted(stored(daemon)) == ["a", "b", "c"]
    # Each run counts once in the write time, with its share of the transaction.
    writes = daemon.registry.get_sample_value("mlops_watchdog_storage_write_seconds_count")
    assert writes == 3


async def test_a_second_run_of_one_endpoint_goes_into_the_next_transaction(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    # What the first run teaches in memory (cold starts, drift), the second reads.
    probes = [("a", "default"), ("a", "demo"), ("b", "default")]
    daemon, commits, _ = await stored_together(tmp_path, client, probes)
    assert commits.count == 2
    sets = daemon.store.db.query("select distinct endpoint, golden_set from results order by 1, 2")
    assert [(r["endpoint"], r["golden_set"]) for r in sets] == [
        ("a", "default"),
        ("a", "demo"),
        ("b", "default"),
    ]


async def test_a_run_that_cannot_be_stored_fails_alone(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    def prepare(daemon: Daemon) -> None:
        record = daemon.recorder.record

        def failing(endpoint: Endpoint, run: Run, now: datetime) -> Recorded:
            if endpoint.name == "b":
                raise ValueError("a bug in storing b")
            return record(endpoint, run, now)

        daemon.recorder.record = failing  # type: ignore[method-assign]

    probes = [("a", "default"), ("b", "default"), ("c", "default")]
    daemon, commits, got = await stored_together(tmp_path, client, probes, prepare)
    assert [type(g).__name__ for g in got] == ["Run", "ValueError", "Run"]
    assert sorted(stored(daemon)) == ["a", "c"]
    assert commits.count == 2  # the group's failed, then a and c alone


async def test_a_database_that_cannot_be_written_holds_the_whole_group(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    def prepare(daemon: Daemon) -> None:
        transaction = daemon.store.transaction

        def failing() -> AbstractContextManager[Database]:
            if not daemon.outage.on:  # the group's; the alert state's, in memory, goes on
                raise StoreError("w.db: cannot write: database or disk is full")
            return transaction()

        daemon.store.transaction = failing  # type: ignore[method-assign,assignment]
        failed = daemon.outage.failed

        def told(what: str, error: Exception, now: float) -> None:
            said.append(what)
            failed(what, error, now)

        daemon.outage.failed = told  # type: ignore[method-assign]

    said: list[str] = []

    probes = [("a", "default"), ("b", "default")]
    daemon, _, got = await stored_together(tmp_path, client, probes, prepare)
    assert all(isinstance(g, Run) for g in got)
    assert daemon.outage.on
    assert sorted(w.endpoint for w in daemon.spool.oldest(10)) == ["a", "b"]
    assert stored(daemon) == []
    # One line for the log names one run and counts the rest, however large the group.
    assert said[0].startswith("the results of a/") and said[0].endswith(" and of 1 other run(s)")
