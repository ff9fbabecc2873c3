"""What every file and message format of the testbed shares (node configs, wire envelopes,
topologies, scenarios, deploy files): the strict base model, the role and host-name vocabulary,
reading a TOML file, and pydantic errors turned into one line naming the file, line and field.

Torch-free and import-light: the scenario checks and the topology import it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

NODE_ROLES = ("cloud", "edge", "device")  # the roles that run a node process
Role = Literal["cloud", "edge", "device"]
# a node's host name as node configs and deploy files give it (Mininet's names are stricter:
# topologies/spec.py)
HOST_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
HOST_NAME_RULE = "[A-Za-z0-9_.-]{1,32}"
SCHEDULER_NAMES = ("ddim", "dpm", "ddpm")  # nodes/diffusion/schedulers.py: one adapter each
MAX_SEED = 2**63  # seeds lie in [0, 2**63): what a torch generator and a node request take
MAX_STEPS = 1000  # the noise schedule's training timesteps
# The most images one local generation takes (`generate --n`, `quality --n`): a stated cap.  All
# images go through each model as one batch, so memory grows with n; `check_fits` in
# nodes/diffusion/generation.py refuses what this machine's free memory cannot hold.
MAX_GENERATE_IMAGES = 100_000


def check_scheduler_name(name: str) -> str:
    if name not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULER_NAMES)}")
    return name


SchedulerName = Annotated[str, AfterValidator(check_scheduler_name)]  # a field naming a scheduler


class StrictModel(BaseModel):
    """Unknown fields are errors, values do not change once checked, and a number is finite: a
    `nan` would pass every bound check (nan <= 3600 is false, but so is nan > 3600)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- pydantic errors as one line --------------------------------------------------------------
def field_path(loc: tuple) -> str:
    """('topology', 'devices', 1, 'bw') -> `topology.devices[1].bw`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def error_loc(err: dict) -> tuple:
    """The field path of one pydantic error, without pydantic's wrapper and union-branch tags."""
    return tuple(p for p in err["loc"]
                 if p not in ("function-after", "function-before", "function-plain")
                 and not (isinstance(p, str) and "[" in p))


def error_text(err: dict) -> str:
    """One pydantic error's message, saying what was given where a type or choice was wrong."""
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown field"
    elif kind in ("literal_error", "finite_number") or (kind.endswith("_type") and "input" in err):
        given = err.get("input")
        what = {bool: "a boolean", str: "a string", int: "an integer", float: "a number",
                list: "a list", dict: "a table"}.get(type(given))
        shown = repr(given) if len(repr(given)) <= 40 else repr(given)[:37] + "..."
        msg = f"{msg} (got {shown}{', ' + what if what and kind.endswith('_type') else ''})"
    return msg.splitlines()[0] if msg else kind


def validation_message(exc: ValidationError, prefix: str = "", more: bool = False) -> str:
    """One line naming the first bad field, e.g. `topology.devices[1].bw: must be > 0`; `more`
    adds how many other problems there are."""
    err = exc.errors()[0]
    path = field_path((*((prefix,) if prefix else ()), *error_loc(err)))
    extra = f" (and {exc.error_count() - 1} more)" if more and exc.error_count() > 1 else ""
    return f"{path}: {error_text(err)}{extra}" if path else f"{error_text(err)}{extra}"


# --- TOML files: reading, and the line a field is on ---------------------------------------------
def read_toml(path: str | Path, what: str = "scenario file") -> tuple[dict, str]:
    """A TOML file's tables and its text; ValueError naming the file for anything unreadable
    (missing, a directory, not UTF-8 text, not TOML)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{what} not found: {p}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a text file (byte {exc.start} is not UTF-8); "
                         f"a {what} is TOML text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML: {exc}") from None
    return data, text


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")


def line_of(text: str, loc: tuple) -> int | None:
    """The line of the TOML text where the field at `loc` is written (or, failing that, where its
    table starts).  Integers in `loc` pick the entry of an array of tables (`[[topology.devices]]`)."""
    lines = text.splitlines()
    seen: dict[str, int] = {}  # array-of-tables header -> entries so far
    best: tuple[int, int] | None = None  # (elements of loc the table accounts for, line index)
    for index, line in enumerate(lines):
        m = _HEADER.match(line)
        if not m:
            continue
        name = m.group(2).replace('"', "").replace("'", "").replace(" ", "")
        parts = name.split(".")
        entry = None
        if m.group(1) == "[[":
            entry = seen.get(name, 0)
            seen[name] = entry + 1
        used = _consumed(loc, parts, entry)
        if used is not None and (best is None or used > best[0]):
            best = (used, index)
    used, start = best if best else (0, -1)
    rest = [p for p in loc[used:] if isinstance(p, str)]
    if rest:
        key = re.compile(rf"^\s*[\"']?{re.escape(rest[0])}[\"']?\s*=")
        for index in range(start + 1, len(lines)):
            if _HEADER.match(lines[index]):
                break
            if key.match(lines[index]):
                return index + 1
    return start + 1 if start >= 0 else None


def _consumed(loc: tuple, parts: list[str], entry: int | None) -> int | None:
    """How many elements of `loc` the table header `parts` accounts for (None: another table)."""
    i = 0
    for part in parts:
        while i < len(loc) and isinstance(loc[i], int):  # an index into an inline array: skip
            i += 1
        if i >= len(loc) or loc[i] != part:
            return None
        i += 1
    if entry is not None:  # an array of tables: loc must go on with this entry's index
        if i >= len(loc) or loc[i] != entry:
            return None
        i += 1
    return i


_NAMED_FIELD = re.compile(r"^(?P<field>[A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*): (?P<rest>.+)$")


def _named_field(message: str, tables: tuple[str, ...]) -> tuple | None:
    """The field a message begins with (`strategies.a.split[1]: ...` -> its loc), where it begins
    with a field of one of `tables`."""
    m = _NAMED_FIELD.match(message)
    if not m or re.split(r"[.\[]", m["field"])[0] not in tables:
        return None
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", m["field"]) if p)


def located(message: str, text: str, source: str, tables: tuple[str, ...], loc: tuple = ()) -> ValueError:
    """`source:line: message` where the line of `loc` (or of the field `message` begins with,
    `strategies.a: ...`) can be found in the file's text; `source: message` where it cannot."""
    loc = loc or _named_field(message, tables) or ()
    line = line_of(text, loc) if text and loc else None
    return ValueError(f"{source}:{line}: {message}" if line else f"{source}: {message}")


def file_error(exc: ValidationError, text: str, source: str, tables: tuple[str, ...],
               whole: str | None = None) -> ValueError:
    """`source:line: field: message` for a pydantic error of a file's tables; `whole` names a check
    across fields whose message does not begin with the field it is about (None: it names them)."""
    err = exc.errors()[0]
    loc, msg = error_loc(err), error_text(err)
    field = field_path(loc)
    if not field and not _named_field(msg, tables):
        field = whole or ""
    return located(f"{field}: {msg}" if field else msg, text, source, tables, loc)
