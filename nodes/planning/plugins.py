"""Finding a researcher's own strategy class, the one named by a scenario's `kind = "plugin"` table.

A plugin is named three ways (`plugin = ...`):
    "package.module:Class"       an import path: a module the CLI and the node processes can import
                                 (installed, or on PYTHONPATH)
    "my_strategy.py:Class"       a Python file; relative to the scenario file's directory when the
                                 scenario is read (emulation/scenario.py), else to the working directory
    "name"                       a class a package registers under the entry point group
                                 `edgestage.strategies` (its pyproject.toml:
                                 [project.entry-points."edgestage.strategies"] name = "module:Class")
and built as `Class(name, options)`: the strategy's name in the scenario and its `options` table.

Everything that goes wrong here (no such module or file, a module that raises on import, no such
class, a constructor that refuses its options) is one ValueError line naming the plugin and the
problem: the scenario is refused before any network comes up, and a node whose plugin will not load
(the node process imports it anew) fails at its start.  What the plugin does once built (its faults
per request) is nodes/planning/strategies.py `Plugin`'s.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "edgestage.strategies"
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_CLASS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_ref(ref: str) -> str:
    """The reference's syntax (nothing is imported): `module:Class`, `file.py:Class` or an entry point
    name; ValueError saying which forms there are."""
    where, colon, name = ref.rpartition(":")
    if not colon:
        if ref.endswith(".py"):
            raise ValueError(f"plugin {ref!r}: name the class too, '{ref}:Class'")
        if _ENTRY_NAME.match(ref):
            return ref
    elif _CLASS.match(name) and (where.endswith(".py") or _MODULE.match(where)):
        return ref
    raise ValueError(f"plugin {ref!r}: expected 'package.module:Class', 'file.py:Class' or the name "
                     f"of an entry point of {ENTRY_POINT_GROUP}")


def is_file_ref(ref: str) -> bool:
    return ref.rpartition(":")[0].endswith(".py")


def anchored(ref: str, base: Path) -> str:
    """A file reference with a relative path made absolute against `base` (the node processes run in
    another working directory); any other reference unchanged."""
    if not is_file_ref(ref):
        return ref
    where, _, name = ref.rpartition(":")
    path = Path(where).expanduser()
    return f"{path if path.is_absolute() else (base / path).resolve()}:{name}"


def display(ref: str) -> str:
    """The reference as failure reasons show it: a file by its name only (reasons are counted)."""
    if is_file_ref(ref):
        where, _, name = ref.rpartition(":")
        return f"{Path(where).name}:{name}"
    return ref


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_class(ref: str) -> type:
    """The class `ref` names, its module imported (a file's once per process); ValueError, one line."""
    check_ref(ref)
    where, colon, name = ref.rpartition(":")
    if not colon:
        return _entry_point(ref)
    module = _file_module(Path(where)) if is_file_ref(ref) else _import(where, ref)
    found = getattr(module, name, None)
    if found is None:
        raise ValueError(f"plugin {display(ref)}: {where} has no {name!r}")
    if not isinstance(found, type):
        raise ValueError(f"plugin {display(ref)}: {name} is not a class (a {type(found).__name__})")
    return found


def instantiate(name: str, ref: str, options: Mapping[str, Any]) -> Any:
    """`Class(name, options)`: the plugin's strategy object; ValueError, one line, if it cannot be made
    or has no `plan_for`."""
    cls = load_class(ref)
    try:
        strategy = cls(name, dict(options))
    except Exception as exc:  # whatever a constructor raises on options it does not take
        raise ValueError(f"plugin {display(ref)}: {cls.__name__}({name!r}, options) raised "
                         f"{type(exc).__name__}: {one_line(exc)}") from None
    if not callable(getattr(strategy, "plan_for", None)):
        raise ValueError(f"plugin {display(ref)}: {cls.__name__} has no plan_for(request, view) method")
    return strategy


def _import(module: str, ref: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ValueError(f"plugin {ref}: cannot import {module!r} ({one_line(exc)}): is it installed or on "
                         "PYTHONPATH?") from None
    except Exception as exc:  # the module's own code failed
        raise ValueError(f"plugin {ref}: importing {module} raised {type(exc).__name__}: "
                         f"{one_line(exc)}") from None


def _file_module(path: Path) -> Any:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"plugin {path.name}: no such file {path}")
    # one module per file: dataclasses and pickling look a class's module up in sys.modules
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"_edgestage_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"plugin {path.name}: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ValueError(f"plugin {path.name}: importing {path} raised {type(exc).__name__}: "
                         f"{one_line(exc)}") from None
    return module


def _entry_point(name: str) -> type:
    found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
        raise ValueError(f"plugin {name}: no strategy of that name is registered under the entry point "
                         f"group {ENTRY_POINT_GROUP} (registered: {', '.join(known) or 'none'})")
    values = sorted({ep.value for ep in found})
    if len(values) > 1:
        raise ValueError(f"plugin {name}: registered by several packages ({', '.join(values)})")
    try:
        loaded = found[0].load()
    except Exception as exc:
        raise ValueError(f"plugin {name}: loading its entry point {values[0]} raised "
                         f"{type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(loaded, type):
        raise ValueError(f"plugin {name}: its entry point {values[0]} is not a class")
    return loaded
