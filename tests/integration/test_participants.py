"""A challenge's participants, with real Unix users dropping for real: the owner of a
drop decides its team, organizers alone drop datasets and set priorities, and a
dataset's phase and quotas refuse with the time the next drop is accepted."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spool import db, rules, teams
from spool.errors import DatarunError
from spool.layout import Spool
from tests.conftest import age, drop, reachable_tmp
from tests.helpers import bundles as B
from tests.helpers.cli import in_process
from tests.helpers.users import as_user, drop_as, unix_users
from watcher import sharing

ALICE, BOB, CAROL, DAVE = "drt-alice", "drt-bob", "drt-carol", "drt-dave"


@pytest.fixture(scope="module")
def users() -> Iterator[dict]:
    with unix_users(ALICE, BOB, CAROL, DAVE) as made:
        yield made


@pytest.fixture
def spool() -> Iterator[Spool]:
    """A spool other users can reach (tmp_path's parents are root's alone)."""
    base = reachable_tmp("datarun-participants-")
    layout = Spool(base / "spool")
    layout.create()
    yield layout
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def src() -> Iterator[Path]:
    """Where bundles are made before users copy them in: readable by all."""
    base = reachable_tmp("datarun-bundles-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def challenge(url: str, spool: Spool, *, lions_priority: str | None = None) -> None:
    """Three teams, and the spool shared as they say (what `datarun team add` does)."""
    with db.connect(url) as conn:
        teams.add(conn, "lions", [teams.user(ALICE)], queue=lions_priority)
        teams.add(conn, "tigers", [teams.user(BOB)])
        teams.add(conn, "staff", [teams.user(CAROL)], organizer=True)
        sharing.reshare(spool, conn)


def opened_by_hand(spool: Spool) -> None:
    """Open mode: the admin lets everyone drop, as before teams existed."""
    for folder in (spool.incoming_datasets, *spool.incoming_submissions.glob("*")):
        folder.chmod(0o1777)


def readable(path: Path) -> Path:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


def dataset_as(
    user: str, spool: Spool, src: Path, name: str = "iris", rules_toml: str = ""
) -> Path:
    bundle = B.dataset(src / user / name, name)
    manifest = bundle / "dataset.toml"
    manifest.write_text(rules_toml + manifest.read_text())
    return age(drop_as(user, readable(bundle), spool.incoming_datasets))


def submission_as(user: str, spool: Spool, src: Path, name: str, *, manifest: str | None = None,
                  variant: int = 0, dataset: str = "iris") -> Path:  # fmt: skip
    where = Path(tempfile.mkdtemp(prefix=f"{user}-", dir=src))
    where.chmod(0o755)
    bundle = B.submission(where, name, manifest=manifest, variant=variant)
    inbox = spool.incoming_submissions / dataset if dataset else spool.incoming_submissions
    return age(drop_as(user, readable(bundle), inbox))


def rejection(spool: Spool, name: str) -> str:
    [entry] = [p for p in spool.rejected.iterdir() if p.name.endswith("_" + name)]
    return (entry / "REJECTED.txt").read_text()


def submissions(url: str) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(
            "select s.name, s.team, s.queue, s.owner, s.owner_uid, s.notes,"
            " (select min(j.queue) from jobs j where j.submission_id = s.id) as job_queue"
            " from submissions s order by s.id"
        ).fetchall()


def test_without_teams_anyone_drops_anything_as_before(
    users, spool, src, make_watcher, database_url
):
    watcher = make_watcher()
    opened_by_hand(spool)
    dataset_as(ALICE, spool, src)
    assert [o.result for o in watcher.run_once()] == ["registered"]
    opened_by_hand(spool)
    submission_as(BOB, spool, src, "logreg", manifest='team = "anyone"\npriority = "high"\n')
    assert [o.result for o in watcher.run_once()] == ["registered"]
    [row] = submissions(database_url)
    assert (row["team"], row["queue"], row["job_queue"]) == ("anyone", "high", "high")
    assert (row["owner"], row["owner_uid"]) == (BOB, users[BOB].pw_uid)


def test_the_owner_of_a_drop_decides_its_team(users, spool, src, make_watcher, database_url):
    watcher = make_watcher()
    challenge(database_url, spool)
    dataset_as(CAROL, spool, src)  # an organizer
    assert [o.result for o in watcher.run_once()] == ["registered"]

    submission_as(ALICE, spool, src, "mine")
    submission_as(ALICE, spool, src, "claims", manifest='team = "tigers"\n')
    submission_as(DAVE, spool, src, "stranger")
    results = {o.name: (o.result, o.detail) for o in watcher.run_once()}
    assert results["mine"] == ("registered", "lions.mine.v1")
    assert results["claims"][0] == "rejected"
    assert "team: says 'tigers'" in rejection(spool, "claims")
    assert results["stranger"][0] == "rejected"
    assert f"{DAVE} (uid {users[DAVE].pw_uid}) is in no team" in rejection(spool, "stranger")

    with pytest.raises(AssertionError, match="Permission denied"):  # not even written
        dataset_as(ALICE, spool, src, "wine")
    wine = B.dataset(src / "root" / "wine", "wine")  # put there by root, but hers
    for path in [wine, *wine.rglob("*")]:
        os.chown(path, users[ALICE].pw_uid, users[ALICE].pw_gid)
    drop(wine, spool.incoming_datasets)
    [outcome] = watcher.run_once()  # refused unread
    assert outcome.result == "rejected"
    assert "only organizers drop datasets" in rejection(spool, "wine")
    with db.connect(database_url) as conn:
        assert conn.execute("select count(*) as n from datasets").fetchone()["n"] == 1

    submission_as(CAROL, spool, src, "baseline", manifest='team = "tigers"\n')
    [outcome] = watcher.run_once()  # organizers submit for any team
    assert (outcome.result, outcome.detail) == ("registered", "tigers.baseline.v1")
    status = json.loads((spool.results / "iris" / "lions.mine.v1" / "status.json").read_text())
    assert (status["team"], status["dropped_by"]) == ("lions", ALICE)


def test_a_participant_does_not_choose_a_priority(users, spool, src, make_watcher, database_url):
    watcher = make_watcher()
    challenge(database_url, spool, lions_priority="low")
    dataset_as(CAROL, spool, src)
    watcher.run_once()
    submission_as(ALICE, spool, src, "eager", manifest='priority = "high"\n')
    submission_as(CAROL, spool, src, "urgent", manifest='team = "lions"\npriority = "high"\n')
    watcher.run_once()
    by_name = {r["name"]: r for r in submissions(database_url)}
    assert (by_name["eager"]["queue"], by_name["eager"]["job_queue"]) == ("low", "low")
    assert "priority 'high' was not taken" in by_name["eager"]["notes"][0]
    status = json.loads((spool.results / "iris" / "lions.eager.v1" / "status.json").read_text())
    assert "priority 'high' was not taken" in status["notes"][0]
    assert by_name["urgent"]["job_queue"] == "high"  # an organizer's choice stands

    with db.connect(database_url) as conn:  # the organizers raise a team
        teams.add(conn, "lions", [], queue="high")
    submission_as(ALICE, spool, src, "eager", manifest='priority = "high"\n', variant=1)
    watcher.run_once()
    latest = submissions(database_url)[-1]
    assert (latest["queue"], latest["job_queue"], latest["notes"]) == ("high", "high", [])


def test_a_hard_link_to_another_users_archive_is_not_theirs(
    users, spool, src, make_watcher, database_url
):
    watcher = make_watcher()
    challenge(database_url, spool)
    dataset_as(CAROL, spool, src)
    watcher.run_once()
    archive = B.zip_folder(readable(B.submission(src / "bob", "secret")), src / "secret.zip")
    os.chown(archive, users[BOB].pw_uid, users[BOB].pw_gid)
    archive.chmod(0o666)  # what fs.protected_hardlinks asks of a link to another's file
    link = spool.incoming_submissions / "iris" / "secret.zip"
    as_user(ALICE, "ln", str(archive), str(link))
    age(link)
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected" and "other hard links" in outcome.detail
    assert submissions(database_url) == []


def test_quotas_and_phases_refuse_with_when_the_next_is_accepted(
    users, spool, src, make_watcher, database_url
):
    watcher = make_watcher()
    challenge(database_url, spool)
    dataset_as(CAROL, spool, src, rules_toml="submissions_per_day = 2\n")
    assert [o.result for o in watcher.run_once()] == ["registered"]
    for variant in range(2):
        submission_as(ALICE, spool, src, "try", variant=variant)
        assert [o.result for o in watcher.run_once()] == ["registered"]
    submission_as(ALICE, spool, src, "try", variant=0)  # a duplicate: answered, not counted
    assert [o.result for o in watcher.run_once()] == ["duplicate"]
    submission_as(ALICE, spool, src, "try", variant=2)
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d 00:00:00 UTC")
    assert f"the next is accepted from {tomorrow}" in outcome.detail
    submission_as(BOB, spool, src, "try")  # another team's quota is its own
    assert [o.result for o in watcher.run_once()] == ["registered"]

    with db.connect(database_url) as conn:  # organizers change the rules, on the record
        rules.change(conn, "iris", ["submissions_per_day=3", "min_minutes_between=30"], "carol")
        changes = conn.execute("select setting, old_value, new_value, changed_by"
                               " from dataset_changes order by id").fetchall()  # fmt: skip
    assert [(c["setting"], c["old_value"], c["new_value"]) for c in changes] == [
        ("submissions_per_day", "2", "3"),
        ("min_minutes_between", None, "30"),
    ]
    submission_as(ALICE, spool, src, "again", variant=3)
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected" and "at least 30 minute(s) apart" in outcome.detail

    with db.connect(database_url) as conn:
        opens = datetime.now(UTC) + timedelta(hours=2)
        rules.change(conn, "iris", ["min_minutes_between=", f"opens_at={opens.isoformat()}"],
                     "carol")  # fmt: skip
    submission_as(BOB, spool, src, "early", variant=4)
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected"
    assert f"opens for submissions at {opens.strftime('%Y-%m-%d %H:%M:%S UTC')}" in outcome.detail

    with db.connect(database_url) as conn:
        rules.change(conn, "iris", ["opens_at=2020-01-01T00:00:00Z",
                                    "closes_at=2020-02-01T00:00:00Z"], "carol")  # fmt: skip
    submission_as(BOB, spool, src, "late", variant=5)
    submission_as(CAROL, spool, src, "fix", variant=6, manifest='team = "tigers"\n')
    results = {o.name: o for o in watcher.run_once()}
    assert results["late"].result == "rejected"
    assert "closed for submissions at 2020-02-01 00:00:00 UTC" in results["late"].detail
    assert results["fix"].result == "registered"  # organizers are held to none of it


def test_organizers_settings_are_checked(users, spool, src, make_watcher, database_url):
    watcher = make_watcher()
    opened_by_hand(spool)
    dataset_as(CAROL, spool, src)
    watcher.run_once()
    with db.connect(database_url) as conn:
        with pytest.raises(DatarunError, match="closes_at must come after opens_at"):
            rules.change(conn, "iris", ["opens_at=2030-01-02T00:00:00Z",
                                        "closes_at=2030-01-01T00:00:00Z"], "x")  # fmt: skip
        with pytest.raises(DatarunError, match="expected SETTING=VALUE"):
            rules.change(conn, "iris", ["priority=high"], "x")
        with pytest.raises(DatarunError, match="submissions_per_day"):
            rules.change(conn, "iris", ["submissions_per_day=-1"], "x")
        with pytest.raises(DatarunError, match="no dataset 'nope'"):
            rules.change(conn, "nope", ["submissions_per_day=1"], "x")
        with pytest.raises(DatarunError, match="is in team 'lions' already"):
            teams.add(conn, "lions", [teams.user(ALICE)])
            teams.add(conn, "tigers", [teams.user(ALICE)])
        assert conn.execute("select count(*) as n from dataset_changes").fetchone()["n"] == 0


def test_a_naive_time_in_dataset_toml_is_refused(users, spool, src, make_watcher):
    watcher = make_watcher()
    opened_by_hand(spool)
    dataset_as(CAROL, spool, src, rules_toml="closes_at = 2030-01-01T00:00:00\n")
    [outcome] = watcher.run_once()
    assert outcome.result == "rejected"
    assert "closes_at" in rejection(spool, "iris")


def test_an_unknown_user_of_the_mount_is_named_by_uid(spool, src, make_watcher, database_url):
    """A uid with no name on the master (known only where the mount is used)."""
    watcher = make_watcher()
    with db.connect(database_url) as conn:
        teams.add(conn, "ghosts", [teams.user("54321")])
    drop(B.dataset(src / "d", "iris"), spool.incoming_datasets)
    watcher.run_once()  # root's: datarun itself
    bundle = B.submission(src / "g", "boo")
    os.chown(bundle, 54321, 54321)
    drop(bundle, spool.incoming_submissions / "iris")
    [outcome] = watcher.run_once()
    assert (outcome.result, outcome.detail) == ("registered", "ghosts.boo.v1")


def test_each_team_reads_its_own_and_organizers_read_all(
    users, spool, src, make_watcher, database_url
):
    """Through the master: what it writes for a team is that team's and the organizers'."""
    watcher = make_watcher()
    challenge(database_url, spool)
    dataset_as(CAROL, spool, src)
    watcher.run_once()
    submission_as(BOB, spool, src, "secret")
    submission_as(BOB, spool, src, "broken", manifest='team = "lions"\n')
    waiting = submission_as(
        BOB, spool, src, "early", dataset="", manifest='dataset = "later"\n'
    )  # not registered yet
    results = {o.name: o.result for o in watcher.run_once()}
    assert results == {"secret": "registered", "broken": "rejected", "early": "waiting"}
    status = spool.results / "iris" / "tigers.secret.v1" / "status.json"
    [answer] = [p for p in spool.rejected.iterdir() if p.name.endswith("_broken")]
    [waits] = list((spool.waiting / "later").iterdir())
    [stored] = list((spool.store / "submissions").iterdir())
    private = [status, answer / "REJECTED.txt", waits / "WAITING.txt", stored / "classifier.py"]
    for path in private:
        assert as_user(ALICE, "cat", str(path), check=False).returncode != 0, path
    for path in private[:3]:
        assert as_user(BOB, "cat", str(path), check=False).returncode == 0, path
        assert as_user(CAROL, "cat", str(path), check=False).returncode == 0, path
    assert as_user(ALICE, "ls", str(spool.incoming_submissions / "iris"),
                   check=False).returncode != 0  # fmt: skip
    assert as_user(ALICE, "ls", str(status.parent), check=False).returncode != 0
    assert as_user(ALICE, "ls", str(spool.results / "iris"), check=False).returncode == 0
    assert not waiting.exists()

    with db.connect(database_url) as conn:  # bob leaves: at once he reads nothing more
        teams.remove(conn, "tigers", [teams.user(BOB)])
        sharing.reshare(spool, conn)
    assert as_user(BOB, "cat", str(status), check=False).returncode != 0
    assert as_user(CAROL, "cat", str(status), check=False).returncode == 0


def test_status_and_team_commands_say_which_mode_a_home_is_in(
    users, spool, src, database_url, tmp_path
):
    def run(*args: str, code: int = 0) -> str:
        return in_process(spool.root, database_url, tmp_path / "home", *args, code=code)

    assert json.loads(run("status", "--json"))["mode"][0]["mode"] == "open"
    assert "no teams: datarun is open" in run("team", "list")
    said = run("team", "add", "lions", "--user", ALICE, "--user", BOB)
    assert "team lions (participants, priority low); added drt-alice, drt-bob" in said
    assert "shared by team" in said  # the spool follows at once
    run("team", "add", "staff", "--organizer", "--user", CAROL)
    mode = json.loads(run("status", "--json"))["mode"][0]
    assert (mode["mode"], mode["teams"], mode["participants"], mode["organizers"]) == (
        "challenge", 1, 2, 1)  # fmt: skip
    assert "is in team 'lions' already" in run("team", "add", "tigers", "-u", BOB, code=1)
    assert "removed from lions: drt-bob" in run("team", "remove", "lions", "--user", BOB)
    listed = json.loads(run("team", "list", "--json"))
    assert [(t["name"], t["organizer"], t["users"]) for t in listed] == [
        ("staff", True, [CAROL]), ("lions", False, [ALICE])]  # fmt: skip
    assert "no dataset 'iris'" in run("dataset", "set", "iris", "closes_at=", code=1)
