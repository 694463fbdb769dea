"""The manifest loader under hypothesis: whatever the text, ``load_text`` returns a spec or
raises a :class:`~devstack.errors.ManifestError` in which every problem names the file and a
line (only a manifest with nothing in it has no line to name); never another exception.

Three sources of input: arbitrary text; YAML documents built from the schema's own keys with
values of every type (reaching the checks behind the parser); and valid manifests mutated
byte by byte. Procfiles get arbitrary text too. ``DEVSTACK_FUZZ_EXAMPLES`` (default 150) sets
how many examples each test tries (thousands for a longer hunt).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.errors import ManifestError, ManifestErrors
from devstack.manifest.loader import load_text
from devstack.manifest.schema import (
    HEALTH_KEYS,
    PROXY_KEYS,
    ROUTE_KEYS,
    SERVICE_KEYS,
    TOP_KEYS,
)

EXAMPLES = int(os.environ.get("DEVSTACK_FUZZ_EXAMPLES", "150"))
DEEP = "DEVSTACK_FUZZ_EXAMPLES" in os.environ
"""A deep run (examples set by hand) explores anew each time; the default run is derandomized, so
the suite gives the same verdict on every machine (what a deep run finds becomes a test)."""
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not DEEP,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ROOT = Path(__file__).parent
"""Where the manifests "live" (loading reads, never writes)."""
WHOLE_FILE = ("the manifest is empty", "no processes found")
"""Problems of the whole file, with no line to name."""

VALID = [
    "services:\n  web:\n    command: python -m http.server $PORT\n",
    "services:\n  web:\n    command: srv\n    port: 3000\n    health: /healthz\n"
    "    depends_on: [db]\n  db:\n    command: db --port $PORT\n    health: false\n"
    "routes:\n  - path: /api\n    service: web\n    strip_prefix: true\n"
    "proxy:\n  port: 8443\n  hosts: [myapp.test]\n",
    "x-common: &common\n  restart: always\n  stop_timeout_seconds: 2\n"
    "services:\n  a:\n    <<: *common\n    command: a\n    env: {A: 1, B: yes}\n"
    "    watch: ['*.py', '/x', 'dir/']\n    reload: blue-green\n",
]

KEYS = sorted({*TOP_KEYS, *PROXY_KEYS, *SERVICE_KEYS, *HEALTH_KEYS, *ROUTE_KEYS, "web", "db"})
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "$PORT",
            "/api",
            "../..",
            "*.py",
            "web",
            "127.0.0.1",
            "::1",
            "0",
            "1e9",
            "on-failure",
            "blue-green",
            "tcp",
            "/",
            "~",
            "!!",
            "{}",
            "[]",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
DOCUMENTS = st.dictionaries(
    st.sampled_from(["services", "proxy", "routes", "x-extra", "other"]),
    st.one_of(
        VALUES,
        st.dictionaries(
            st.sampled_from(["web", "db", "a b", ""]),
            st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8),
            max_size=3,
        ),
        st.lists(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6), max_size=4),
    ),
    max_size=4,
)


def check(text: str, name: str = "devstack.yaml") -> None:
    path = ROOT / name
    try:
        load_text(text, path)
    except ManifestError as error:
        problems = error.errors if isinstance(error, ManifestErrors) else (error,)
        for problem in problems:
            assert problem.path == path, problem.format()
            assert problem.line is not None or problem.message.startswith(WHOLE_FILE), (
                problem.format()
            )
            assert problem.line is None or 1 <= problem.line <= _yaml_lines(text), problem.format()
            assert "Traceback" not in problem.format()


def _yaml_lines(text: str) -> int:
    """How many lines YAML sees (it also breaks lines at CR, NEL, LS and PS), plus one."""
    return sum(text.count(c) for c in "\n\r\x85\u2028\u2029") + 2


@FUZZ
@given(st.text(max_size=400))
def test_any_text_is_a_spec_or_a_clean_error(text: str) -> None:
    check(text)


@FUZZ
@given(DOCUMENTS)
def test_documents_of_the_schemas_keys_are_a_spec_or_a_clean_error(document: object) -> None:
    check(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 2), st.characters()), max_size=6),
)
def test_valid_manifests_mutated_are_a_spec_or_a_clean_error(
    manifest: str, edits: list[tuple[int, int, str]]
) -> None:
    text = manifest
    for position, kind, char in edits:
        at = position % (len(text) + 1)
        if kind == 0:
            text = text[:at] + char + text[at:]  # insert
        elif kind == 1:
            text = text[:at] + text[at + 1 :]  # delete
        else:
            text = text[:at] + char + text[at + 1 :]  # replace
    check(text)


@FUZZ
@given(st.text(max_size=300))
def test_any_procfile_is_a_spec_or_a_clean_error(text: str) -> None:
    check(text, "Procfile")


@pytest.mark.parametrize("manifest", VALID)
def test_the_seeds_are_valid(manifest: str) -> None:
    load_text(manifest, ROOT / "devstack.yaml")


def test_a_character_yaml_forbids_is_an_error_with_its_line() -> None:
    # Found by the fuzzer: the reader's error carried no line, so none was reported.
    with pytest.raises(ManifestError) as error:
        load_text("services:\n  web:\n    command: a\x1fb\n", ROOT / "devstack.yaml")
    assert error.value.line == 3
    assert "U+001F is not allowed" in error.value.message


def test_a_route_that_is_not_a_mapping_does_not_shift_the_others() -> None:
    # Found by the fuzzer: routes[0] was dropped, routes[1] became the spec's first, and its
    # error was reported as routes[0], with no line.
    with pytest.raises(ManifestError) as error:
        load_text("routes:\n- []\n- service: ''\n  path: /\n", ROOT / "devstack.yaml")
    problems = error.value.errors if isinstance(error.value, ManifestErrors) else (error.value,)
    assert all(p.line is not None for p in problems), [p.format() for p in problems]
    assert not any(p.key and p.key.startswith("routes[0].") for p in problems)
