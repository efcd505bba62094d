"""`datarun demo --challenge`: the demo as a data challenge. Two teams of users (uids
with no login, as on a mount shared with other machines) drop submissions to iris,
whose organizers allow two a day: each drop is owned by its team's user, so datarun
knows whose it is; the third of one team is refused with the time the next is
accepted. The public leaderboard shows each team's pick by validation score and no
test score; then the organizers reveal, and the picks are ranked by their test score.

It needs root: only root can make files that other users own.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from datarun import admin
from datarun.demo import DATASETS, Demo
from spool import db, leaderboards, rules, teams
from spool.errors import DatarunError
from watcher import sharing

DATASET = "iris"
PER_DAY = 2
# team -> (its user's uid, what it drops: an example's name, or name:variant)
TEAMS = {
    "lions": (61001, ["logreg", "forest", "forest:2"]),  # the third is over the quota
    "tigers": (61002, ["forest", "broken"]),
}


def check_root() -> None:
    if os.geteuid() != 0:
        raise DatarunError(
            "datarun demo --challenge needs root: it drops files owned by two teams' users "
            "(uids 61001 and 61002), and only root can make files that others own"
        )


@dataclass
class ChallengeDemo(Demo):
    datasets: tuple[str, ...] = (DATASET,)

    def expected(self) -> int:
        return sum(min(len(drops), PER_DAY) for _, drops in TEAMS.values())

    def drop_examples(self) -> None:
        """The teams, the dataset (by datarun itself, an organizer), its quota, then
        each team's drops as that team's user."""
        check_root()
        with db.connect(self.url) as conn:
            for team, (uid, _) in TEAMS.items():
                teams.add(conn, team, [teams.User(uid, str(uid))])
            sharing.reshare(self.spool, conn)
        self._drop_dataset()
        inbox = self.spool.incoming_submissions / DATASET
        self.wait(inbox.is_dir, f"dataset {DATASET} to be registered")
        with db.connect(self.url) as conn:
            rules.change(conn, DATASET, [f"submissions_per_day={PER_DAY}"], teams.acting_user())
        examples = files("datarun") / "examples" / f"{DATASET}-submissions"
        for team, (uid, drops) in TEAMS.items():
            for entry in drops:
                name, _, variant = entry.partition(":")
                copy = self.home / "examples" / team / f"{team}-{name}{variant}"
                shutil.copytree(str(examples / name), copy)
                (copy / "submission.toml").write_text(f'name = "{name}{variant}"\n')
                if variant:  # other content: not a duplicate, another submission
                    with open(copy / "classifier.py", "a", encoding="utf-8") as code:
                        code.write(f"# variant {variant}\n")
                for path in [copy, *copy.rglob("*")]:
                    os.chown(path, uid, uid, follow_symlinks=False)
                copy.rename(inbox / copy.name)  # dropped as the team's user made it

    def _drop_dataset(self) -> None:
        from sklearn import datasets

        loader, target = DATASETS[DATASET]
        bundle = self.home / "examples" / DATASET
        shutil.copytree(str(files("datarun") / "examples" / DATASET), bundle)
        frame = getattr(datasets, loader)(as_frame=True).frame
        frame.rename(columns={"target": target}).to_csv(bundle / "train.csv", index=False)
        bundle.rename(self.spool.incoming_datasets / DATASET)

    def report(self, url: str) -> dict[str, Any]:
        summary = super().report(url)  # the public leaderboard: no test score yet
        refused = sorted(self.spool.rejected.glob("*/REJECTED.txt"))
        summary["refused"] = [path.read_text(encoding="utf-8") for path in refused]
        for text in summary["refused"]:
            self.console.print(f"\n[bold]A drop over the quota:[/]\n{text}", markup=True)
        with db.connect(url) as conn:
            leaderboards.reveal(conn, DATASET)
            self.console.print(f"\nThe organizers reveal: `datarun reveal {DATASET}`")
            self.wait(lambda: _published(self.spool.results / DATASET / "leaderboard.csv"),
                      "the revealed leaderboard")  # fmt: skip
            phase = admin.leaderboard_phase(conn, DATASET)
            public = admin.leaderboard(conn, DATASET)
            private = admin.leaderboard(conn, DATASET, private=True)
        self.console.print(admin.render_leaderboard(DATASET, public, phase))
        self.console.print(admin.render_leaderboard(DATASET, private, phase, private=True))
        summary["revealed"] = public
        summary["private"] = private
        return summary


def _published(board: Path) -> bool:
    try:
        return "test_mean" in board.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return False
