"""Loading a Celery app as `celery -A` and `celery beat` do, and importing it again to find
crontab fields it picks at random on import.

This runs the user's module (I/O). celery is imported lazily, typed Any at this boundary (it
ships no type information).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from beatd.core.errors import BeatdError

_MAX_DETAIL = 1000  # characters of an error from Celery itself, on one line


def load_app(spec: str) -> Any:
    """Import MODULE:APP (or MODULE, found the way `celery -A` finds it) from the current
    directory; raise BeatdError in one line if that fails."""
    with _user_code(f"cannot import {spec!r}"):
        utils = importlib.import_module("celery.app.utils")
        base = importlib.import_module("celery.app.base")
        imports = importlib.import_module("celery.utils.imports")
        if ":" in spec:
            module_name, _, attribute = spec.partition(":")
            # import_from_cwd puts the current directory on sys.path, as `celery -A` does.
            module = imports.import_from_cwd(module_name)
            if not hasattr(module, attribute):
                raise BeatdError(f"cannot import {spec!r}: {module_name} has no {attribute!r}")
            app = getattr(module, attribute)
        else:
            app = utils.find_app(spec)  # module.app, module.celery, module.celery.app, ...
        if not isinstance(app, base.Celery):
            raise BeatdError(f"{spec!r} is a {type(app).__name__}, not a Celery app")
        app.loader.import_default_modules()  # what `celery beat` does: registers the tasks
        app.conf.beat_schedule  # noqa: B018  (loads the configuration, like beat)
    return app


def load_config_module(name: str) -> Any:
    """A bare Celery app configured from a plain module (celeryconfig.py), old-style setting
    names (CELERYBEAT_SCHEDULE, CELERY_TIMEZONE) included, as Celery itself reads them."""
    with _user_code(f"cannot read config module {name!r}"):
        base = importlib.import_module("celery.app.base")
        app = base.Celery("beatd-import", set_as_current=False)
        app.config_from_object(name)
        app.conf.beat_schedule  # noqa: B018  (config_from_object is lazy: import it now)
    return app


_CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
_PROBE_SEEDS = (1, 2)
_PROBE_TIMEOUT_S = 120


def observe(app: Any) -> dict[str, dict[str, list[int]]]:
    """Each crontab entry's expanded fields: what an app that picks them at random changes."""
    schedules = importlib.import_module("celery.schedules")
    seen: dict[str, dict[str, list[int]]] = {}
    for name, entry in (app.conf.beat_schedule or {}).items():
        schedule = entry.get("schedule") if isinstance(entry, Mapping) else None
        if isinstance(schedule, schedules.crontab):
            seen[str(name)] = {f: sorted(getattr(schedule, f)) for f in _CRONTAB_FIELDS}
    return seen


def find_varying(
    source: Sequence[str], seen: Mapping[str, Mapping[str, list[int]]]
) -> tuple[dict[str, frozenset[str]], str | None]:
    """Import the app again in two fresh interpreters with different random seeds; return the
    crontab fields that came out differently (per entry), and a note if that was impossible.

    source is the import-celery arguments: [MODULE:APP] or ["--config-module", MODULE].
    """
    if not seen:
        return {}, None
    command = [sys.executable, "-m", "beatd.compat.celery_load", "--probe"]
    probes = [
        subprocess.Popen(
            [*command, str(seed), *source],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for seed in _PROBE_SEEDS
    ]
    varying: dict[str, set[str]] = {}
    try:
        for probe in probes:
            out, _ = probe.communicate(timeout=_PROBE_TIMEOUT_S)
            if probe.returncode != 0:
                raise ValueError(f"exit status {probe.returncode}")
            again = json.loads(out.strip().splitlines()[-1])
            for name, fields in seen.items():
                for field_name, value in fields.items():
                    if again.get(name, {}).get(field_name) != value:
                        varying.setdefault(name, set()).add(field_name)
    except (ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        return {}, f"could not import the app again to look for random values ({exc})"
    finally:
        for probe in probes:
            probe.kill()
            probe.wait()
    return {name: frozenset(fields) for name, fields in varying.items()}, None


def _probe(argv: Sequence[str]) -> int:
    seed, *source = argv
    random.seed(int(seed))
    app = load_config_module(source[1]) if source[0] == "--config-module" else load_app(source[0])
    print(json.dumps(observe(app)))
    return 0


@contextlib.contextmanager
def _user_code(what: str) -> Iterator[None]:
    # The user's module may print; stdout is the YAML, so that goes to stderr instead.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except BeatdError:
        raise
    except (Exception, SystemExit) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        if type(exc).__module__.startswith("celery.") and lines:
            # Celery's own loader errors wrap a sentence and then name the settings: keep all.
            lines = [" ".join(lines)[:_MAX_DETAIL]]
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name in what:
            detail += " (run beatd in the directory where `celery -A` works)"
        raise BeatdError(f"{what}: {detail}") from exc


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    sys.exit(_probe(sys.argv[2:]))
