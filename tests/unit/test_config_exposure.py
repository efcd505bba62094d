"""A configuration file that holds a database password and that others may read (an
administrator's usual 0644) is named, with the fix, whenever datarun reads it
(issue 14, item 6): a warning, once per file and process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from datarun import settings
from datarun.settings import exposed_secret, load_settings

URL = 'database_url = "postgresql://datarun:hunter2@db.example.org/datarun"\n'


def config(where: Path, text: str, mode: int) -> Path:
    path = where / "datarun.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("text", "mode", "who"),
    [
        (URL, 0o644, "every user"),
        (URL, 0o640, "its group"),
        ('db_password = "hunter2"\n', 0o604, "every user"),
        ('database_url = "postgresql://db/datarun?password=hunter2"\n', 0o644, "every user"),
    ],
)
def test_a_readable_file_with_a_password_is_named_with_its_fix(tmp_path, text, mode, who):
    path = config(tmp_path, text, mode)
    warning = exposed_secret(path)
    assert warning == (f"{path} holds a database password and {who} may read it "
                       f"(mode {mode:o}): chmod 600 {path}")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (URL, 0o600),
        (URL, 0o400),
        ('database_url = "postgresql://datarun@db/datarun"\nworkers = 3\n', 0o644),
        ("workers = 3\n", 0o644),
    ],
)
def test_a_private_file_or_one_without_a_password_is_fine(tmp_path, text, mode):
    assert exposed_secret(config(tmp_path, text, mode)) is None


def test_reading_the_settings_warns_once(clean_env, monkeypatch, caplog):
    path = config(clean_env, URL, 0o644)
    monkeypatch.setenv("DATARUN_CONFIG", str(path))
    monkeypatch.setattr(settings, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="datarun.settings"):
        load_settings()
        load_settings()
    said = [r.getMessage() for r in caplog.records if r.name == "datarun.settings"]
    assert said == [exposed_secret(path)]
    assert "hunter2" not in said[0]
