"""The admin commands: their output on success and on each kind of error."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from datarun.cli import app
from spool import db, jobs
from tests.helpers import bundles as B
from tests.helpers.cli import run

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_error_line(result, *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("datarun: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_status_leaderboard_logs_submit_on_an_empty_system(env, tmp_path):
    assert run(env, "init").returncode == 0
    status = run(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert [(m["mode"], m["teams"]) for m in data.pop("mode")] == [("open", 0)]
    assert data == {"datasets": [], "submissions": [], "queue": [], "executors": []}
    assert "datasets" in run(env, "status").stdout
    one_error_line(run(env, "leaderboard", "nope"), "no dataset named 'nope'")
    one_error_line(run(env, "logs", "--job", "999"), "no such job or submission")
    one_error_line(run(env, "logs", "iris/nobody.v1"), "no submission 'iris/nobody.v1'")
    one_error_line(run(env, "cancel", "42x"), "no submission '42x'")
    sub = B.submission(tmp_path / "src")
    dropped = run(env, "submit", str(sub), "--dataset", "iris")
    assert dropped.returncode == 0, dropped.stderr
    spool = Path(env["DATARUN_HOME"]) / "spool" / "incoming" / "submissions" / "iris"
    assert sorted(p.name for p in spool.iterdir()) == ["logreg"]  # no hidden leftover
    assert (spool / "logreg" / "classifier.py").read_text() == B.CLASSIFIER + "\n# variant 0\n"
    one_error_line(run(env, "submit", str(sub), "--dataset", "iris"), "already waiting")
    one_error_line(run(env, "submit", str(tmp_path / "missing")), "does not exist")


def test_bad_arguments_are_one_line_and_exit_1(env):
    one_error_line(run(env, "leaderboard"), "Missing argument", "datarun leaderboard --help")
    one_error_line(run(env, "retry"), "name exactly one of")
    one_error_line(run(env, "executor", "--workers", "many"), "Invalid value for '--workers'")
    one_error_line(run(env, "no-such-command"), "No such command")
    one_error_line(run({**env, "DATARUN_QUEUES": "urgent"}, "config"), "queues")


def test_no_database_is_one_line_for_every_command_that_needs_one(env):
    env["DATARUN_DATABASE_URL"] = f"postgresql://u:secret@127.0.0.1:{closed_port()}/dr"
    for args in (["status"], ["leaderboard", "iris"], ["logs", "--job", "1"], ["retry",
                 "--job", "1"], ["cancel", "1"], ["init"], ["master"], ["executor"]):  # fmt: skip
        result = run(env, *args)
        one_error_line(result, "cannot reach the database at 127.0.0.1")
        assert "secret" not in result.stderr


def _commands() -> list[str]:
    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None)
        names += [f"{name} {sub}" for sub in subs] if subs else [name]
    return names


def test_every_command_has_help_with_an_example_and_is_in_the_readme(env):
    readme = (ROOT / "README.md").read_text()
    commands = _commands()
    assert len(commands) >= 18
    real = run(env, "--help")  # the installed command; then each help in this process
    assert real.returncode == 0 and "Example:" in real.stdout, real.stderr
    for command in commands:
        result = CliRunner().invoke(app, [*command.split(), "--help"], env=env)
        assert result.exit_code == 0, (command, result.output)
        assert "Example:" in result.output, command
        assert re.search(rf"`datarun {command}\b", readme), f"README does not show {command}"


def test_every_setting_is_in_the_readme():
    from datarun.settings import Settings

    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{name}` |" in readme, name


def test_status_text_and_json_use_the_same_names_and_piped_lines_are_whole(env):
    assert run(env, "init").returncode == 0
    host = "runner-" + "x" * 190  # longer than any terminal: a pipe gets it whole
    with db.connect(run(env, "db", "url").stdout.strip()) as conn:
        jobs.register_executor(conn, host=host, pid=4242, queues=["high", "low"], workers=3,
                               version="9.9", limits={})  # fmt: skip
    data = json.loads(run(env, "status", "--json").stdout)
    text = run(env, "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    for section, rows in data.items():
        assert section in lines, (section, text.stdout)
        header = lines[lines.index(section) + 2]  # the title, the top border, the header
        shown = [cell.strip() for cell in header.strip("┃│ ").split("┃")]
        columns = [*rows[0]] if rows else shown
        assert shown == columns, (section, shown, columns)
    (executor,) = data["executors"]
    assert executor["host"] == host and executor["workers"] == 3
    assert isinstance(executor["heartbeat_age"], float)
    row = next(line for line in lines if host in line)
    assert re.search(r"│ \d+\.\d s +│ 9\.9 +│$", row.rstrip()), row  # an age: `1.5 s`
