"""YAML configs validated into dataclasses.

A config file names its ``task``; each task registers the dataclass that describes it (nested
dataclasses, nerfstudio style) and the function that runs it. An unknown key, a missing
required key, a wrong type, a number that is not finite or a value outside the range its field
declares (``gen3d.fields``: ``steps: PosInt``) is a ``ConfigError`` naming the key and the file,
raised before anything starts. ``--set a.b=value`` overrides a key (the value is read as YAML).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml

from gen3d.fields import problem as range_problem


class ConfigError(ValueError):
    """A config that cannot start a run; the message names the key, the file and the fix."""


@dataclasses.dataclass
class Task:
    config_cls: type
    run: Callable[..., Any]


# task name -> "module:ConfigClass:run_function", imported only when that task is used
TASKS: dict[str, str] = {
    "mesh": "learners.mesh_train:MeshRunConfig:run",
    "volume": "learners.volume_train:VolumeRunConfig:run",
    "image_volume": "learners.image_train:ImageRunConfig:run",
}


IMPORT_HELP = ("import this module first, e.g. one whose @register makes your own estimator "
               "(gen3d.estimators) or task known by name (repeatable)")


def import_modules(names: list[str]) -> None:
    """Import each of ``names`` (``--import``), so that what they register can be named in a
    config; a module that cannot be imported is a ``ConfigError`` saying so. The working
    directory is searched too, as ``python -m`` does, for scripts run by path."""
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"--import {name}: {e}; give a module importable from here "
                              "(its folder on PYTHONPATH, or run from that folder)") from None


def register_task(name: str, target: str) -> None:
    """Make ``task: name`` in a config run ``target`` ("module:ConfigClass:run_function")."""
    TASKS[name] = target


def get_task(name: str, where: str = "config") -> Task:
    if name not in TASKS:
        raise ConfigError(f"{where}: unknown task {name!r}; choose one of {sorted(TASKS)}")
    mod, cls, fn = TASKS[name].split(":")
    m = importlib.import_module(mod)
    return Task(getattr(m, cls), getattr(m, fn))


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        value = _convert(value, args[0], key, where)
        msg = range_problem(value, tp)
        if msg:
            raise ConfigError(f"{where}: {key} {msg}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if len(args) == 2 and type(None) in args:  # Optional[X]: X's own error says more
            return _convert(value, next(a for a in args if a is not type(None)), key, where)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: {key} must have {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_convert(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {k: _convert(v, vt, f"{key}.{k}", where) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "config", prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking every key, type and range."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{prefix}{unknown[0]}'; valid keys under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], prefix + name, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {prefix}{name}")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {prefix}{e}") from None
    return obj


def validate(obj: Any, where: str = "config", prefix: str = "") -> None:
    """Check every value of a config built or changed in code as ``load`` checks a file's:
    finite numbers within their fields' ranges (``gen3d.fields``); a ``ConfigError`` names
    the first that is not."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        _check(getattr(obj, f.name), hints[f.name], prefix + f.name, where)


def _check(value: Any, tp: Any, key: str, where: str) -> None:
    if dataclasses.is_dataclass(value):
        validate(value, where, key + ".")
        return
    msg = range_problem(value, tp)
    if msg:
        raise ConfigError(f"{where}: {key} {msg}, got {value!r}")
    if isinstance(value, (list, tuple)):
        inner = get_args(tp)[0] if get_origin(tp) is Annotated else tp
        args = [a for a in get_args(inner) if a is not Ellipsis]  # list[X], tuple[X, ...], tuple[X, Y]
        for i, v in enumerate(value):
            _check(v, args[min(i, len(args) - 1)] if args else Any, f"{key}[{i}]", where)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def as_config_file(cfg: Any) -> dict:
    """``cfg`` as the config file that runs it again: its task first, then every key (a run
    writes this as ``config.json``, which ``--config`` reads back)."""
    # the task whose config class this is, wherever the class is defined (the run's module
    # may import it from another)
    task = [name for name in TASKS if get_task(name).config_cls is type(cfg)]
    return ({"task": task[0]} if task else {}) | to_dict(cfg)


def apply_overrides(data: dict, overrides: list[str], where: str) -> dict:
    """Apply ``a.b=value`` strings (values read as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write it as key.path=value, e.g. train.steps=100")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        d = data
        for k in keys[:-1]:
            nxt = d.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {path}: {k} in {where} is not a mapping")
            d = nxt
        try:
            d[keys[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            why = " ".join(str(e).split())
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({why}); quote it, "
                              "e.g. --set 'key=[1, 2]'") from None
    return data


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config {str(p)!r} is a folder; pass a file, e.g. --config "
                          "configs/primitives.yaml")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass --config configs/<name>.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        why = " ".join(str(e).split())
        raise ConfigError(f"{p}: not valid YAML: {why}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{p}: cannot be read as a UTF-8 text file ({e}); pass a YAML config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> tuple[Task, Any]:
    """Read, override and validate a config file; returns its task and its dataclass."""
    where = str(path)
    data = apply_overrides(read_yaml(path), overrides or [], where)
    task_name = data.pop("task", None)
    if task_name is None:
        raise ConfigError(f"{where}: missing key 'task'; choose one of {sorted(TASKS)}")
    task = get_task(task_name, where)
    return task, from_dict(task.config_cls, data, where)
