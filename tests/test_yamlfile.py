"""YAML with line numbers and duplicate keys: the values must be exactly PyYAML's safe_load."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from beatd.core import yamlfile
from beatd.core.yamlfile import YamlError, YList, YMap, parse

EXAMPLE = Path(__file__).parent.parent / "config" / "beatd.yaml"


@pytest.fixture(autouse=True, params=["libyaml", "pure-python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with both event parsers: libyaml when installed, PyYAML's own if not."""
    if request.param == "pure-python":
        monkeypatch.setattr(yamlfile, "_events", lambda text: yaml.SafeLoader(text).get_event)
    else:
        pytest.importorskip("yaml._yaml", reason="PyYAML was built without libyaml")
    return str(request.param)


SAME_AS_PYYAML = [
    EXAMPLE.read_text(encoding="utf-8"),
    "a: 1\nb: 1.5\nc: true\nd: yes\ne: off\nf: ~\ng: null\nh:\n",
    "when: 2027-01-01T00:00:00+01:00\nday: 2026-11-21\nhex: 0x1f\noct: 0o17\nexp: 1e3\n",
    "inf: .inf\nnan_is_str: nanx\nneg: -.INF\nsci: 6.02e+23\nbig: 123456789012345678901234\n",
    "quoted: '30 2 * * *'\ndouble: \"a\\tb\"\nplain: hello world\nempty: ''\n",
    "colon: 'a: b'\nhash: a#b\nstar: '*/15 * * * *'\nat: '@daily'\n",
    "list: [1, two, {three: 3}]\nblock:\n  - x\n  - - y\n    - z\n",
    "folded: >\n  one\n  two\nliteral: |\n  one\n  two\n",
    "base: &b {x: 1, y: [2]}\ncopy: *b\nmerged:\n  <<: *b\n  y: 3\n",
    "m1: &m1 {a: 1}\nm2: &m2 {a: 2, b: 2}\nboth:\n  <<: [*m1, *m2]\n  c: 3\n",
    "1: one\n2.5: float key\ntrue: bool key\nnull: null key\n",
    "unicode: 'Grüße ✓'\n",
    "binary: !!binary aGk=\nstr: !!str 123\nint: !!int '7'\n",
    "- just\n- a list\n",
    "just a string\n",
]


@pytest.mark.parametrize("text", SAME_AS_PYYAML)
def test_values_are_exactly_what_pyyaml_safe_load_builds(text: str) -> None:
    assert parse(text, "f.yaml") == yaml.safe_load(text)


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n", "--- \n...\n"])
def test_an_empty_document_is_none(text: str) -> None:
    assert parse(text, "f.yaml") is None


def test_scalars_have_the_types_yaml_1_1_gives_them() -> None:
    data = parse("a: 2026-11-21\nb: 2027-01-01T00:00:00+01:00\nc: no\nd: 010\n", "f.yaml")
    assert data == {
        "a": date(2026, 11, 21),
        "b": datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        "c": False,
        "d": 8,  # YAML 1.1 octal, as PyYAML reads it
    }


def test_every_key_remembers_its_line() -> None:
    data = parse("# comment\ntop: 1\njobs:\n  a:\n    every: 1h\n\n  b: {x: 1}\n", "f.yaml")
    assert isinstance(data, YMap)
    assert data.lines == {"top": 2, "jobs": 3}
    jobs = data["jobs"]
    assert jobs.lines == {"a": 4, "b": 7}
    assert jobs["a"].lines == {"every": 5}
    assert jobs["b"].lines == {"x": 7}


def test_list_items_remember_their_lines() -> None:
    data = parse("args:\n  - 1\n  -\n    x: 2\n  - [3]\n", "f.yaml")
    items = data["args"]
    assert isinstance(items, YList)
    assert items.lines == [2, 4, 5]
    assert items == [1, {"x": 2}, [3]]


def test_duplicate_keys_are_recorded_with_both_lines_and_the_last_value_kept() -> None:
    data = parse("jobs:\n  a:\n    every: 1m\n  b: 2\n  a:\n    every: 5m\n", "f.yaml")
    jobs = data["jobs"]
    assert jobs.duplicates == [("a", 5, 2)]
    assert jobs["a"] == {"every": "5m"}  # PyYAML's choice; the duplicate is an error upstream
    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}  # and PyYAML alone says nothing


def test_duplicates_in_flow_mappings_and_nested_mappings_are_found_too() -> None:
    data = parse("a: {x: 1, x: 2}\nb:\n  c:\n    d: 1\n    d: 2\n", "f.yaml")
    assert data["a"].duplicates == [("x", 1, 1)]
    assert data["b"]["c"].duplicates == [("d", 5, 4)]
    assert data.duplicates == []


def test_merged_keys_are_not_duplicates_and_explicit_keys_win() -> None:
    data = parse("base: &b {x: 1, y: 2}\njob:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert data["job"] == {"x": 1, "y": 3}
    assert data["job"].duplicates == []
    assert data["job"].lines == {"y": 4, "x": 1}


def test_a_yaml_set_becomes_a_python_set_as_in_pyyaml() -> None:
    assert parse("a: !!set {x, y}\n", "f.yaml") == yaml.safe_load("a: !!set {x, y}\n")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: 1\n---\nb: 2\n", 2, "more than one document (remove the '---')"),
        ("a: [1,\n", 2, "while parsing a flow node"),
        ("a: b: c\n", 1, "mapping values are not allowed"),
        ("a: 1\n b: 2\n", 2, "mapping values are not allowed"),
        ("a: *nowhere\n", 1, "unknown alias *nowhere"),
        ("a: '\n", 2, "found unexpected end of stream"),
        ('a: "\\q"\n', 1, "found unknown escape character"),
    ],
)
def test_invalid_yaml_names_the_line_and_the_problem(text: str, line: int, message: str) -> None:
    with pytest.raises(YamlError) as caught:
        parse(text, "f.yaml")
    problem = caught.value.problem
    assert (problem.file, problem.line) == ("f.yaml", line)
    assert problem.message.startswith("not valid YAML")
    assert message in problem.message
    assert str(problem).startswith(f"f.yaml:{line}: not valid YAML")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: 1\nb: !!python/object/apply:os.system [ls]\n", 2, "unsupported tag"),
        ("a: !custom x\n", 1, "unsupported tag !custom"),
        ("? [1, 2]\n: x\n", 1, "a key must be a scalar"),
        ("a:\n  <<: 5\n", 2, "<< merges a mapping or list of mappings"),
    ],
)
def test_yaml_that_is_valid_but_not_plain_data_is_refused(
    text: str, line: int, message: str
) -> None:
    with pytest.raises(YamlError) as caught:
        parse(text, "f.yaml")
    assert caught.value.problem.line == line
    assert message in caught.value.problem.message


def test_python_tags_never_run_code() -> None:
    with pytest.raises(YamlError, match="unsupported tag"):
        parse("!!python/object/apply:builtins.exit [3]\n", "f.yaml")
