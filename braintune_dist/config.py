"""Typed dataclass configs: one object per job, a YAML preset, and the same fields as a CLI.

Every job config is a (possibly nested) dataclass whose fields carry a docstring on the line
below them (litgpt style). From such a class this module builds:

* ``parse_cli(cls, argv)``: ``--config preset.yaml`` then ``--field value`` overrides; nested
  fields are dotted (``--data.root /path``); ``--help`` lists every field with its docstring.
* ``load_yaml(cls, path)`` / ``from_dict(cls, d)``: unknown keys raise ``ConfigError`` naming the
  key and the file, so a typo never silently falls back to a default.
* ``to_dict(cfg)`` / ``save_yaml(cfg, path)``: the snapshot logged with every run.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from braintune_dist.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config file or override names an unknown field or holds a value of the wrong type."""


# --------------------------------------------------------------------------- docstrings
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each field of a dataclass, read from its source with ``ast``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


# --------------------------------------------------------------------------- type coercion
def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise ConfigError naming ``where``."""
    tp, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where}: null is not allowed (expected {tp})")
    origin = typing.get_origin(tp)
    try:
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
            return from_dict(tp, value, where=where)
        if origin is typing.Literal:
            allowed = typing.get_args(tp)
            if value not in allowed:
                raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
            return value
        if origin in (list, tuple):
            (item_tp, *_rest) = typing.get_args(tp) or (Any,)
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else \
                    [v for v in value.split(",") if v != ""]
            if not isinstance(value, (list, tuple)):
                value = [value]
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping, got {value!r}")
            return dict(value)
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: {value!r} is not a boolean")
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ConfigError(f"{where}: {value!r} is not an integer")
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
        if tp is Any:
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {tp}: {exc}") from None
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)       # resolves each base class in its own module


# --------------------------------------------------------------------------- dict / yaml
def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build ``cls`` from a mapping; unknown keys and wrong types raise ``ConfigError``."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists) for YAML and MLflow params."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return plain(cfg)


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    """Load a YAML preset into ``cls``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of field: value")
    return from_dict(cls, data, where=str(path))


def save_yaml(cfg: Any, path: str | os.PathLike) -> None:
    """Write a config snapshot atomically (temp name, then rename)."""
    from braintune_dist.io import write_text
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------- CLI
def _flat_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """(dotted name, type, default, doc) for every leaf field, nested dataclasses expanded."""
    out = []
    hints, docs = _hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        if dataclasses.is_dataclass(tp):
            out += _flat_fields(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, tp, default, docs.get(f.name, "")))
    return out


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def parse_cli(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse ``--config FILE`` plus ``--field value`` overrides into ``cls``.

    Precedence: dataclass defaults < YAML preset < command-line overrides.
    """
    parser = argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML preset to start from (jobs/configs/*.yaml)")
    flat = _flat_fields(cls)
    for name, tp, default, doc in flat:
        base, _ = _unwrap_optional(tp)
        kw: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS,
                                  help=f"{doc} (default: {default!r})")
        if base is bool:
            kw["metavar"] = "{true,false}"
        parser.add_argument("--" + name, **kw)
        if "_" in name:   # accept --trs-per-story as well as --trs_per_story
            parser._option_string_actions["--" + name.replace("_", "-")] = parser._option_string_actions["--" + name]
    ns = vars(parser.parse_args(argv))
    data: dict[str, Any] = {}
    if ns.get("config"):
        path = Path(ns.pop("config"))
        if not path.is_file():
            parser.error(f"--config: file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            parser.error(f"{path}: top level must be a mapping")
    ns.pop("config", None)
    for name, value in ns.items():
        _set_dotted(data, name, value)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable; parser.error exits


# --------------------------------------------------------------------------- job registry
JOB_CONFIGS: dict[str, str] = {
    "prepare_data": "braintune_dist.jobs.prepare_data:PrepareConfig",
    "multi_brain": "braintune_dist.jobs.multi_brain:MultiBrainConfig",
    "evaluate": "braintune_dist.jobs.evaluate:EvaluateConfig",
    "sweep": "braintune_dist.jobs.sweep:SweepConfig",
    "scaling": "braintune_dist.jobs.scaling:ScalingJobConfig",
    "analyze": "braintune_dist.jobs.analyze:AnalyzeConfig",
    "pretrain": "braintune_dist.model.pretrain:PretrainConfig",
}
"""Job name (folder under ``jobs/configs/``) → ``module:Class`` of its config."""


def config_class(job: str) -> type:
    """The config dataclass of ``job`` (presets live in ``jobs/configs/<job>/*.yaml``)."""
    import importlib
    if job not in JOB_CONFIGS:
        raise ConfigError(f"unknown job {job!r}; known jobs: {sorted(JOB_CONFIGS)}")
    module, _, name = JOB_CONFIGS[job].partition(":")
    return getattr(importlib.import_module(module), name)
