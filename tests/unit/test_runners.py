from __future__ import annotations

import getpass

import pytest

from provision.runners import Runner, RunnersFileError, parse


def test_a_runners_file_like_the_old_list_runners():
    runners = parse("""
# address              workers  queues     hard  soft
ada@runner-1.lab:2222  2        high,low   3600  3000
runner-2.lab           4        low        # the rest are defaults
10.0.0.7
""")
    assert runners == [
        Runner("ada", "runner-1.lab", 2222, 2, "high,low", 3600, 3000),
        Runner(getpass.getuser(), "runner-2.lab", 22, 4, "low"),
        Runner(getpass.getuser(), "10.0.0.7", 22),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no runner listed"),
        ("a@b 2\nbad/address", "line 2: 'bad/address' is not an address"),
        ("host x", "line 1: workers 'x' is not a number"),
        ("host 0", "line 1: workers must be between 1 and 256"),
        ("host 2 urgent", "line 1: queues 'urgent'"),
        ("host 2 low 60 120", r"soft time limit \(120 s\) exceeds the hard one"),
        ("host 2 low -5", "the hard time limit must be positive"),
        ("host:99999", "port 99999 is out of range"),
        ("host 1 low 1 1 extra", "6 fields"),
        ("u@h\nu@h:22", "line 2: u@h:22 is listed twice"),
    ],
)
def test_each_bad_line_is_named(text, message):
    with pytest.raises(RunnersFileError, match=message):
        parse(text, "runners.txt")
