"""YAML parsing that remembers line numbers and catches duplicate keys (PyYAML keeps the last).

Values are built straight from the parser's events rather than through PyYAML's node graph
and constructor: with libyaml that is three times faster (0.17 s instead of 0.55 s for a
10,000-job file), which is most of `beatd list`'s time budget. Scalars are still resolved and
constructed by PyYAML's own safe resolver and constructors, so they mean what they always did.

Hostile input is bounded: nesting depth, the values that aliases expand to (a "billion laughs"
file of 650 bytes otherwise becomes billions of values for whatever walks it next), and the
length of numbers (int() of a long decimal string takes quadratic time). A scalar that cannot be
built (`2027-02-29`, `!!int abc`) does not stop the parse: it becomes an Invalid in place, and
every one is reported at the end with where it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

from beatd.core.errors import Problem

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_MAP = "tag:yaml.org,2002:map"
_SET = "tag:yaml.org,2002:set"
_SEQ = "tag:yaml.org,2002:seq"
_TAG_PREFIX = "tag:yaml.org,2002:"
_NUMBERS = frozenset({f"{_TAG_PREFIX}int", f"{_TAG_PREFIX}float"})
# Tags whose safe constructors build a scalar; the others (seq, map, set, omap, pairs) are
# generators that would hand back a half-built generator object for a scalar.
_SCALAR_TAGS = frozenset(
    f"{_TAG_PREFIX}{name}" for name in ("null", "bool", "int", "float", "binary", "timestamp")
)

MAX_DEPTH = 64  # mappings and lists inside each other, counting what aliases bring in
MAX_ALIAS_VALUES = 1_000_000  # values reached through aliases, counted with repetition
# Streamed entries are converted this many at a time: one at a time, between the parser's
# events, 100k jobs took 0.25 s longer to validate (caches cold for each).
STREAM_BATCH = 1000
MAX_NUMBER_CHARS = 4300  # Python's own default cap on int('...') (CVE-2020-10735), made ours
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
# First characters for which PyYAML's implicit resolvers may find something other than a string;
# "" is the empty scalar (null).
_RESOLVED_FIRST = frozenset(_RESOLVER.yaml_implicit_resolvers) | {""}


class YMap(dict[Any, Any]):
    """A YAML mapping with the line of each key and any duplicate keys it had."""

    __slots__ = ("duplicates", "line", "lines")  # no __dict__ per mapping: 100k jobs, 100k maps
    line: int
    lines: dict[Any, int]
    duplicates: list[tuple[Any, int, int]]  # (key, line, line of the first occurrence)


class YList(list[Any]):
    """A YAML sequence with the line of each item."""

    __slots__ = ("line", "lines")

    line: int
    lines: list[int]


class Invalid:
    """A scalar that could not be built, left in its place so that parsing goes on."""

    __slots__ = ("line", "message")

    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message

    def __repr__(self) -> str:
        return "<invalid>"


class YamlError(ValueError):
    """The text is not one valid YAML document, or holds values that cannot be built."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        self.problem = self.problems[0]
        super().__init__("\n".join(str(p) for p in self.problems))


Where = Callable[[tuple[Any, ...]], str]


def dotted(path: tuple[Any, ...]) -> str:
    """`jobs.a.args[0]: `, the default way to say where a bad value is."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return f"{text.lstrip('.')}: " if text else ""


def _events(text: str) -> Callable[[], Event]:
    try:
        from yaml._yaml import CParser  # noqa: PLC0415 - libyaml is optional
    except ImportError:
        return yaml.SafeLoader(text).get_event
    return CParser(text).get_event  # type: ignore[return-value]


# Converts one entry of a streamed section as soon as its value is built: (the top-level mapping
# so far, key, value, key's line) -> what the section keeps instead of the value.
Convert = Callable[[YMap, Any, Any, int], Any]


def parse(
    text: str, file: str, where: Where = dotted, stream: tuple[str, Convert] | None = None
) -> Any:
    """Parse one YAML document into YMap/YList/scalars (None if empty); raise YamlError naming
    every value that cannot be built, each prefixed with where(path to it).

    stream=(key, convert): the top-level mapping's `key` mapping keeps convert(...) of each
    entry instead of its value, called for STREAM_BATCH entries at a time as they end, so that
    the values of a big section (100k jobs) never all exist at once. Not for a value that is
    an anchor (an alias may use it whole later; an entry's own value may be one: the anchor
    keeps it) nor once a scalar could not be built (the parse fails then, and convert would
    see an Invalid); merged (`<<`) entries are not converted either.
    """
    try:
        builder = _Builder(_events(text), file, stream)  # PyYAML's reader checks the text here
        value = builder.document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = ", ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        raise YamlError([Problem(file, line, f"not valid YAML: {what}")]) from exc
    except yaml.reader.ReaderError as exc:
        raise YamlError([_reader_problem(exc, text, file)]) from exc
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises the two kinds above
        raise YamlError([Problem(file, None, f"not valid YAML: {exc}")]) from exc
    if builder.invalid:
        paths = _paths_of_invalid(value)
        builder.invalid.sort(key=lambda bad: bad.line)
        raise YamlError(
            [
                Problem(file, bad.line, where(paths.get(id(bad), ())) + bad.message)
                for bad in builder.invalid
            ]
        )
    return value


def _reader_problem(exc: yaml.reader.ReaderError, text: str, file: str) -> Problem:
    # libyaml reports a byte offset, PyYAML a character index: find the character instead (the
    # reader stops at its first occurrence).
    char = exc.character
    found = text.find(chr(char)) if isinstance(char, int) else -1
    line = text.count("\n", 0, found) + 1 if found >= 0 else None
    shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
    return Problem(file, line, f"not valid YAML: unacceptable character {shown}: {exc.reason}")


def _resolve(value: str) -> str:
    """The tag PyYAML's safe resolver gives a plain scalar (its regexes are slow)."""
    tag: str = _RESOLVER.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    return tag


_cached_tag = functools.lru_cache(maxsize=4096)(_resolve)  # `5m`, `true`... repeat all over
_CACHED_CHARS = 64  # longer values rarely repeat; caching them would pin them in memory
_UNBUILT = object()


class _Builder:
    def __init__(
        self, next_event: Callable[[], Event], file: str, stream: tuple[str, Convert] | None
    ) -> None:
        self.next = next_event
        self.file = file
        self.stream = stream
        self.anchors: dict[str, Any] = {}
        self.invalid: list[Invalid] = []
        self.depth = 0  # mappings and lists open around the current event
        self.expanded = 0  # values brought in by aliases so far
        self.sizes: dict[str, tuple[int, int]] = {}  # anchor: (values, height)
        self.measured: dict[int, tuple[int, int]] = {}  # id(container): (values, height)
        self.keys: dict[str, str] = {}  # one string per distinct mapping key
        self.built: dict[str, Any] = {}  # plain scalars' texts and what they resolve to

    def fail(self, event: Event, message: str) -> YamlError:
        return YamlError([Problem(self.file, _line(event), message)])

    def document(self) -> Any:
        self.next()  # StreamStartEvent
        start = self.next()
        if isinstance(start, StreamEndEvent):
            return None
        value = self.value(self.next())
        if not isinstance(self.next(), DocumentEndEvent):  # pragma: no cover - parser guarantees
            raise self.fail(start, "not valid YAML: expected the end of the document")
        after = self.next()
        if not isinstance(after, StreamEndEvent):
            raise self.fail(after, "not valid YAML: more than one document (remove the '---')")
        return value

    def value(self, event: Event) -> Any:
        kind = type(event)
        if kind is ScalarEvent:
            result = self.scalar(event)  # type: ignore[arg-type]
        elif kind is MappingStartEvent:
            result = self.mapping(event)  # type: ignore[arg-type]
            if event.tag == _SET:  # type: ignore[attr-defined]
                result = set(result)  # as PyYAML builds it; args/kwargs then name the set
        elif kind is SequenceStartEvent:
            result = self.sequence(event)  # type: ignore[arg-type]
        elif kind is AliasEvent:
            return self.alias(event)
        else:  # pragma: no cover - the parser only yields the kinds above here
            raise self.fail(event, f"not valid YAML: unexpected {kind.__name__}")
        anchor = getattr(event, "anchor", None)
        if anchor:
            self.anchors[anchor] = result
            self.sizes[anchor] = self.measure(result)
        return result

    def alias(self, event: Event) -> Any:
        anchor = event.anchor  # type: ignore[attr-defined]
        if anchor not in self.anchors:
            raise self.fail(event, f"not valid YAML: unknown alias *{anchor}")
        values, height = self.sizes[anchor]
        self.expanded += values
        if self.expanded > MAX_ALIAS_VALUES:
            raise self.fail(
                event,
                f"not valid YAML here: aliases expand to more than {MAX_ALIAS_VALUES:,} values"
                f" (the cap), at *{anchor}",
            )
        if self.depth + height > MAX_DEPTH:
            raise self.fail(
                event, f"not valid YAML here: nested more than {MAX_DEPTH} deep, at *{anchor}"
            )
        return self.anchors[anchor]

    def measure(self, value: Any) -> tuple[int, int]:
        """How many values a copy of value is, and how deep it nests; each container is
        walked once (an alias bomb is a few lists referring to each other many times)."""
        if not isinstance(value, dict | list | set):
            return 1, 0
        known = self.measured.get(id(value))
        if known is not None:
            return known
        count, height = 1 + (len(value) if isinstance(value, dict) else 0), 0
        for item in value.values() if isinstance(value, dict) else value:
            item_count, item_height = self.measure(item)  # recursion: at most MAX_DEPTH deep
            count, height = count + item_count, max(height, item_height)
        self.measured[id(value)] = result = (count, height + 1)  # alive: anchors hold them
        return result

    def plain(self, event: ScalarEvent) -> Any:
        """An untagged, unanchored scalar: its text, or what PyYAML's resolvers make of it
        (`5`, `true`, `2027-01-01`), built once per text (`true` and small numbers repeat
        thousands of times; what is built is immutable, so one object serves them all)."""
        text = event.value
        if not event.implicit[0] or text[:1] not in _RESOLVED_FIRST:
            return text
        built = self.built.get(text, _UNBUILT)
        if built is _UNBUILT:
            built = self.scalar(event)
            if type(built) is not Invalid and len(text) <= _CACHED_CHARS:
                self.built[text] = built
        return built

    def scalar(self, event: ScalarEvent) -> Any:
        tag, value = event.tag, event.value
        implicit = tag is None and event.implicit[0]
        if implicit:
            if value[:1] not in _RESOLVED_FIRST:  # most keys and values: a plain string
                return value
            tag = _cached_tag(value) if len(value) <= _CACHED_CHARS else _resolve(value)
        elif tag is None or tag == "!":
            return value
        if tag == _STR:
            return value
        if tag not in _SCALAR_TAGS:
            return self.bad(event, f"unsupported tag {_short(tag)}")
        construct = _CONSTRUCTOR.yaml_constructors[tag]
        if tag in _NUMBERS and len(value) > MAX_NUMBER_CHARS:
            return self.bad(event, f"a number of {len(value)} characters (at most 4300)")
        try:
            return construct(_CONSTRUCTOR, ScalarNode(tag, value, style=event.style))
        # PyYAML's constructors let through whatever their parsing raises: ValueError from
        # date(2027, 2, 29), KeyError for `!!bool maybe`, IndexError for `!!int ''`, ...
        except Exception as exc:
            reason = str(exc).splitlines()[0] if isinstance(exc, ValueError) else ""
            because = f" ({reason})" if reason else ""
            if implicit:
                message = f"{value} looks like a {_short(tag)[2:]} but is not one{because}"
                return self.bad(event, f"{message}; quote it if it is a string")
            return self.bad(event, f"{_short(tag)} {value!r} is not valid{because}")

    def bad(self, event: Event, message: str) -> Invalid:
        invalid = Invalid(_line(event), message)
        self.invalid.append(invalid)
        return invalid

    def mapping(
        self, start: MappingStartEvent, convert: Callable[[Any, Any, int], Any] | None = None
    ) -> YMap:
        if start.tag not in (None, "!", _MAP, _SET):
            raise self.fail(start, f"not valid YAML here: unsupported tag {_short(start.tag)}")
        stream = self.stream if self.depth == 0 else None  # the top-level mapping's sections
        self.enter(start)
        result = YMap()
        result.line, result.lines, result.duplicates = _line(start), {}, []
        merged: list[YMap] = []
        pending: list[tuple[Any, Any, int]] = []  # entries to convert
        lines, duplicates = result.lines, result.duplicates
        keys = self.keys  # `task`, `cron`... once each, not once per job
        next_event, plain, value_of = self.next, self.plain, self.value  # a hot loop
        resolved_first = _RESOLVED_FIRST
        while True:
            event = next_event()
            if type(event) is MappingEndEvent:
                break
            line = event.start_mark.line + 1  # type: ignore[union-attr] # both parsers mark
            # Most keys: untagged, unanchored, and either quoted or plain but not starting with
            # a character PyYAML's resolvers might make a non-string of: the text as written.
            if (
                type(event) is ScalarEvent
                and event.tag is None
                and not event.anchor
                and (not event.implicit[0] or event.value[:1] not in resolved_first)
            ):
                key = keys.setdefault(event.value, event.value)
            elif isinstance(event, ScalarEvent):
                if event.value == "<<" and self.is_merge_key(event):
                    merged.extend(self.merge_sources(next_event(), event))
                    continue
                key = self.scalar(event)
                if type(key) is str:
                    key = keys.setdefault(key, key)
                if event.anchor:
                    self.anchors[event.anchor] = key
                    self.sizes[event.anchor] = (1, 0)
            else:
                key = value_of(event)
                if isinstance(key, dict | list | set):
                    message = f"not valid YAML here: a key must be a scalar, got {key!r}"
                    raise self.fail(event, message)
            item = next_event()
            if type(item) is ScalarEvent and item.tag is None and not item.anchor:
                value = plain(item)  # most values
            elif isinstance(item, ScalarEvent) and not item.anchor:
                value = self.scalar(item)
            elif stream is not None and key == stream[0] and _streamable(item):
                value = self.mapping(item, functools.partial(stream[1], result))  # type: ignore[arg-type]
            else:
                value = value_of(item)
            if key in lines:
                duplicates.append((key, line, lines[key]))
            result[key] = value  # the last wins, as in PyYAML; the duplicate is reported
            lines[key] = line
            if convert is not None and type(key) is str:
                pending.append((key, value, line))
                if len(pending) == STREAM_BATCH:
                    self.convert_pending(result, pending, convert)
        if convert is not None and pending:
            self.convert_pending(result, pending, convert)
        for source in merged:  # `<<: *defaults`: explicit keys win, then earlier merges
            for key, value in source.items():
                if key not in result.lines:
                    result[key], result.lines[key] = value, source.lines[key]
        self.depth -= 1
        return result

    def convert_pending(
        self, mapping: YMap, pending: list[tuple[Any, Any, int]], convert: Callable[..., Any]
    ) -> None:
        if not self.invalid:  # else the parse fails, and convert would meet an Invalid
            for key, value, line in pending:
                mapping[key] = convert(key, value, line)
        pending.clear()

    def enter(self, start: Event) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(start, f"not valid YAML here: nested more than {MAX_DEPTH} deep")

    @staticmethod
    def is_merge_key(event: ScalarEvent) -> bool:
        return event.value == "<<" and event.implicit[0] and event.tag in (None, _MERGE)

    def merge_sources(self, event: Event, key_event: Event) -> list[YMap]:
        value = self.value(event)
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(source, YMap) for source in sources):
            raise self.fail(key_event, "not valid YAML: << merges a mapping or list of mappings")
        return sources

    def sequence(self, start: SequenceStartEvent) -> YList:
        if start.tag not in (None, "!", _SEQ):
            raise self.fail(start, f"not valid YAML here: unsupported tag {_short(start.tag)}")
        self.enter(start)
        result = YList()
        result.line, result.lines = _line(start), []
        next_event, plain, lines = self.next, self.plain, result.lines  # a hot loop
        while True:
            event = next_event()
            if type(event) is SequenceEndEvent:
                break
            lines.append(event.start_mark.line + 1)  # type: ignore[union-attr]
            if type(event) is ScalarEvent and event.tag is None and not event.anchor:
                result.append(plain(event))
            else:
                result.append(self.value(event))
        self.depth -= 1
        return result


def _streamable(event: Event) -> bool:
    """A plain mapping (not a set, not an anchor) starts: its entries can be converted."""
    return type(event) is MappingStartEvent and not event.anchor and event.tag in (None, "!", _MAP)


def _paths_of_invalid(root: Any) -> dict[int, tuple[Any, ...]]:
    """Where each Invalid is (a bad key: where its mapping is); each container walked once."""
    found: dict[int, tuple[Any, ...]] = {}
    seen: set[int] = set()
    stack: list[tuple[Any, tuple[Any, ...]]] = [(root, ())]
    while stack:  # bounded: every container is visited once
        node, path = stack.pop()
        if isinstance(node, Invalid):
            found.setdefault(id(node), path)
        elif isinstance(node, dict | list | set) and id(node) not in seen:
            seen.add(id(node))
            if isinstance(node, set):  # a !!set holds keys only
                pairs: list[tuple[Any, Any]] = [(item, None) for item in node]
            else:
                pairs = list(node.items() if isinstance(node, dict) else enumerate(node))
            for key, item in reversed(pairs):  # the stack pops them in file order
                if isinstance(key, Invalid):
                    found.setdefault(id(key), path)
                stack.append((item, (*path, key)))
    return found


def _short(tag: str | None) -> str:
    return f"!!{tag[len(_TAG_PREFIX) :]}" if tag and tag.startswith(_TAG_PREFIX) else str(tag)


def _line(event: Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0
