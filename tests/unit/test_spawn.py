from __future__ import annotations

import pytest

from devstack.run.spawn import command_argv

ENV = {"PORT": "3000", "HOST": "127.0.0.1", "EMPTY": "", "SPACED": "a b"}


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("node server.js --port 3", ["node", "server.js", "--port", "3"]),
        (
            "python -m http.server $PORT --bind $HOST",
            ["python", "-m", "http.server", "3000", "--bind", "127.0.0.1"],
        ),
        ("node x.js --port=${PORT}", ["node", "x.js", "--port=3000"]),
    ],
)
def test_simple_commands_run_directly(command: str, argv: list[str]) -> None:
    assert command_argv(command, ENV) == argv


@pytest.mark.parametrize(
    "command",
    [
        'echo "$PORT"',  # quotes: sh decides what expands
        "echo $UNSET",  # unset: sh makes it empty
        "echo $EMPTY",
        "echo $SPACED",  # sh would split it into words
        "a && b $PORT",
        "FOO=$PORT node x.js",  # an assignment
        "echo $1",
        "echo $$",
        "ls *.py $PORT",
        "echo \\$PORT",
        "npm run dev | cat",
    ],
)
def test_anything_else_goes_through_sh(command: str) -> None:
    assert command_argv(command, ENV) == ["/bin/sh", "-c", command]


def test_without_an_environment_variables_need_sh() -> None:
    assert command_argv("python -m http.server $PORT") == [
        "/bin/sh",
        "-c",
        "python -m http.server $PORT",
    ]
