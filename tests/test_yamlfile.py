"""YAML with line numbers and duplicate keys: the values must be exactly PyYAML's safe_load."""

from __future__ import annotations

import tracemalloc
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


# --- hostile input: every bad value is reported, and the work is bounded ----------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a:\n  at: 2027-02-29T09:00:00\n",
            "f.yaml:2: a.at: 2027-02-29T09:00:00 looks like a timestamp but is not one (day is"
            " out of range for month); quote it if it is a string",
        ),
        ("a: 0000-01-01\n", "f.yaml:1: a: 0000-01-01 looks like a timestamp but is not one"),
        ("a: !!int abc\n", "f.yaml:1: a: !!int 'abc' is not valid (invalid literal for int()"),
        ("a: !!int ''\n", "f.yaml:1: a: !!int '' is not valid"),
        ("a: [!!float x]\n", "f.yaml:1: a[0]: !!float 'x' is not valid"),
        ("a: !!bool maybe\n", "f.yaml:1: a: !!bool 'maybe' is not valid"),
        ("a: !!timestamp nope\n", "f.yaml:1: a: !!timestamp 'nope' is not valid"),
        ("a: !!timestamp 2027-13-01\n", "f.yaml:1: a: !!timestamp '2027-13-01' is not valid"),
        ("a: !!binary 'é'\n", "f.yaml:1: a: !!binary 'é' is not valid"),
        ("a: !!omap x\n", "f.yaml:1: a: unsupported tag !!omap"),
        ("a: !!set x\n", "f.yaml:1: a: unsupported tag !!set"),
        ("a: 1" + "0" * 5000 + "\n", "f.yaml:1: a: a number of 5001 characters (at most 4300)"),
        ("a: !!float " + "1" * 5000 + "\n", "f.yaml:1: a: a number of 5000 characters"),
        ("a: " + "1:" * 3000 + "1\n", "f.yaml:1: a: a number of 6001 characters"),
        ("a: !!seq x\n", "f.yaml:1: a: unsupported tag !!seq"),
        ("? 2027-02-30\n: x\n", "f.yaml:1: 2027-02-30 looks like a timestamp but is not one"),
    ],
)
def test_a_scalar_that_cannot_be_built_is_one_problem_naming_its_line_and_path(
    text: str, expected: str
) -> None:
    with pytest.raises(YamlError) as caught:
        parse(text, "f.yaml")
    assert [str(p) for p in caught.value.problems] == [str(caught.value.problem)]  # exactly one
    assert str(caught.value.problem).startswith(expected)


def test_every_bad_scalar_in_the_file_is_reported_in_file_order() -> None:
    text = "jobs:\n  a:\n    at: 2027-02-29\n  b:\n    args: [1, !!int x, {k: !!bool y}]\n"
    with pytest.raises(YamlError) as caught:
        parse(text, "f.yaml")
    assert [(p.line, p.message.split(":")[0]) for p in caught.value.problems] == [
        (3, "jobs.a.at"),
        (5, "jobs.b.args[1]"),
        (5, "jobs.b.args[2].k"),
    ]


def test_the_caller_says_how_a_path_is_named() -> None:
    with pytest.raises(YamlError) as caught:
        parse("x:\n  y: !!int z\n", "f.yaml", where=lambda path: f"<{'/'.join(path)}> ")
    assert caught.value.problem.message.startswith("<x/y> !!int 'z'")


def block(depth: int) -> str:
    return "\n".join("  " * level + "a:" for level in range(depth)) + " x\n"


@pytest.mark.parametrize("depth", [1, 64])
def test_nesting_up_to_64_deep_is_fine(depth: int) -> None:
    assert parse("[" * depth + "]" * depth, "f.yaml") is not None
    assert parse(block(depth), "f.yaml") is not None


@pytest.mark.parametrize(
    "text",
    ["[" * 65 + "]" * 65, "[" * 900 + "]" * 900, block(65), "{a: " * 5000 + "}" * 5000],
)
def test_nesting_deeper_than_64_is_refused(text: str) -> None:
    with pytest.raises(YamlError) as caught:
        parse(text, "f.yaml")
    assert caught.value.problem.message == "not valid YAML here: nested more than 64 deep"


def test_nesting_built_through_aliases_counts_too() -> None:
    inner = "&a " + "[" * 40 + "]" * 40
    text = f"x: {inner}\ny: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    with pytest.raises(YamlError) as caught:
        parse(text, "f.yaml")
    assert caught.value.problem.line == 2
    assert caught.value.problem.message == "not valid YAML here: nested more than 64 deep, at *a"


def billion_laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nbomb: *a{levels}\n"


def test_an_alias_bomb_is_refused_at_the_cap_without_building_it() -> None:
    text = billion_laughs(8)  # 9**9 = 387 million strings once expanded
    assert len(text.encode()) < 700
    tracemalloc.start()
    try:
        with pytest.raises(YamlError) as caught:
            parse(text, "f.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value.problem) == (
        "f.yaml:7: not valid YAML here: aliases expand to more than 1,000,000 values (the cap),"
        " at *a5"
    )
    assert peak < 2_000_000


def test_aliases_below_the_cap_are_shared_not_copied() -> None:
    many = "[" + ", ".join(["x"] * 999) + "]"
    text = f"a: &a {many}\nb: [{', '.join(['*a'] * 998)}]\n"  # 998,000 values through aliases
    data = parse(text, "f.yaml")
    assert len(data["b"]) == 998
    assert all(item is data["a"] for item in data["b"])


def test_a_set_or_mapping_as_a_key_is_refused() -> None:
    for text in ("? !!set {a, b}\n: 1\n", "? {a: 1}\n: 1\n"):
        with pytest.raises(YamlError, match="a key must be a scalar"):
            parse(text, "f.yaml")


@pytest.mark.parametrize(("text", "line"), [("a: \x00\n", 1), ("a: 1\nb: é\x07\n", 2)])
def test_a_control_character_is_one_problem_naming_its_line(text: str, line: int) -> None:
    with pytest.raises(YamlError) as caught:
        parse(text, "f.yaml")
    assert caught.value.problem.line == line
    assert "unacceptable character" in caught.value.problem.message
    assert "\n" not in str(caught.value.problem)


def test_long_plain_scalars_are_resolved_without_being_cached() -> None:
    before = yamlfile._cached_tag.cache_info().currsize
    assert parse("- 1" + "2" * 100 + "\n- 7\n", "f.yaml") == [int("1" + "2" * 100), 7]
    assert yamlfile._cached_tag.cache_info().currsize <= before + 1  # 7 only
