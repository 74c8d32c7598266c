"""Typed dataclass configs: one object per job, YAML presets and the same fields as a CLI (jsonargparse).

Every job config is a dataclass of stage configs whose fields carry a docstring on the line below them
(litgpt style). jsonargparse turns such a class into

* ``parse_cli(cls, argv)``: ``--config preset.yaml``, then dotted overrides (``--data.root /path``),
  ``--help`` with every field's docstring and ``--print_config`` (the resolved YAML);
* ``from_dict(cls, d)`` / ``load_yaml(cls, path)``: the same parser on a mapping or a file.

Unknown fields, wrong types and out-of-range values raise one :class:`ConfigError` whose message names
the file or the command line, and the field. Types are checked by jsonargparse, value checks live in the
configs' ``__post_init__``; checks of the outside world (files, shards, cluster) are the jobs' preflight.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from braintune_dist.errors import UserError
from braintune_dist.experiment.compat import jsonargparse_message

T = TypeVar("T")
set_parsing_settings(docstring_parse_attribute_docstrings=True)


class ConfigError(UserError):
    """A config file or override names an unknown field or holds a value of the wrong type or range."""


@functools.lru_cache(maxsize=None)
def parser(cls: type) -> ArgumentParser:
    """The jsonargparse parser of a config dataclass (built once per class: it reads every docstring)."""
    doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    p = ArgumentParser(description=doc, exit_on_error=False, env_prefix=None, default_env=False)
    p.add_argument("--config", action=ActionConfigFile, help="YAML preset to start from (jobs/configs/<job>/*.yaml)")
    p.add_class_arguments(cls, nested_key=None, fail_untyped=True)
    return p


def _check_keys(cls: type, data: Any, where: str, prefix: str = "") -> None:
    """Unknown keys and non-mapping values of nested stages, named with their dotted path and the known ones
    (jsonargparse would accept a scalar where a stage belongs, and names unknown keys without their parent)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping of field: value, "
                          f"got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: {prefix}{key}: unknown field; {prefix.rstrip('.') or cls.__name__} "
                              f"has {sorted(fields)}")
        if dataclasses.is_dataclass(hints[key]):
            _check_keys(hints[key], value, where, f"{prefix}{key}.")


def _field_type(cls: type, dotted: str) -> Any:
    for name in dotted.split("."):
        cls = typing.get_type_hints(cls)[name]
    return cls


def _cli_args(cls: type, argv: list[str]) -> list[str]:
    """Check that ``--a.b.c`` overrides name existing fields (with their dotted path, as in a file), and let a
    list field take ``a,b`` (or one value) besides jsonargparse's ``[a,b]``: ``--eval.participants UTS01,UTS02``."""
    out = list(argv)
    for i, arg in enumerate(argv):
        if not arg.startswith("--") or arg.split("=")[0] in ("--config", "--help", "--print_config"):
            continue
        key, eq, value = arg[2:].partition("=")
        *parents, leaf = key.split(".")
        tree: dict = {leaf: None}
        for p in reversed(parents):
            tree = {p: tree}
        _check_keys(cls, tree, "command line")
        if typing.get_origin(_field_type(cls, key)) is list:
            j = i if eq else i + 1
            raw = value if eq else (argv[j] if j < len(argv) else "")
            if raw and not raw.lstrip().startswith("["):
                wrapped = "[" + raw + "]"
                out[j] = f"--{key}={wrapped}" if eq else wrapped
    return out


def _build(cls: type[T], ns, where: str) -> T:
    p = parser(cls)
    try:
        init = p.instantiate(ns)
        kwargs = {f.name: init[f.name] for f in dataclasses.fields(cls)}
        return cls(**kwargs)
    except UserError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {jsonargparse_message(exc)}") from None


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build ``cls`` from a mapping; unknown keys, wrong types and ranges raise ``ConfigError`` naming ``where``."""
    _check_keys(cls, data, where)
    try:
        ns = parser(cls).parse_object(data, defaults=True)
    except Exception as exc:        # jsonargparse raises ArgumentError / NSKeyError / ValueError
        raise ConfigError(f"{where}: {jsonargparse_message(exc)}") from None
    return _build(cls, ns, where)


def _read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of field: value")
    return data


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    """Load a YAML preset into ``cls``; errors name the file."""
    return from_dict(cls, _read_yaml(path), where=str(path))


def parse_cli(cls: type[T], argv: list[str] | None = None) -> T:
    """``--config FILE`` plus ``--field value`` overrides → ``cls``. Precedence: defaults < preset < command line.

    ``--help`` and ``--print_config`` print and exit (status 0). Errors raise ``ConfigError`` naming the
    preset file (for what the file says) or the command line (for an override).
    """
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser(cls)
    preset = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    preset += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for path in preset:            # what the file says is reported against the file, before any override
        from_dict(cls, _read_yaml(path), where=str(path))
    argv = _cli_args(cls, argv)
    try:
        ns = p.parse_args(argv)
    except Exception as exc:
        raise ConfigError(f"command line: {jsonargparse_message(exc)}") from None
    return _build(cls, ns, "command line")


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
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and type(v) is not int:       # jsonargparse's PositiveInt & co.
            return int(v)
        if isinstance(v, float) and type(v) is not float:
            return float(v)
        return v
    return plain(cfg)


def save_yaml(cfg: Any, path: str | os.PathLike) -> None:
    """Write a config snapshot atomically (temp name, then rename)."""
    from braintune_dist.io import write_text
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


JOB_CONFIGS: dict[str, str] = {
    "prepare_data": "braintune_dist.jobs.prepare_data:PrepareConfig",
    "multi_brain": "braintune_dist.jobs.multi_brain:MultiBrainConfig",
    "evaluate": "braintune_dist.jobs.evaluate:EvaluateConfig",
    "sweep": "braintune_dist.jobs.sweep:SweepConfig",
    "scaling": "braintune_dist.jobs.scaling:ScalingJobConfig",
    "compare": "braintune_dist.jobs.compare:CompareJobConfig",
    "analyze": "braintune_dist.jobs.analyze:AnalyzeConfig",
    "pretrain": "braintune_dist.jobs.pretrain:PretrainJobConfig",
    "import_whisper": "braintune_dist.jobs.import_whisper:ImportJobConfig",
    "downstream": "braintune_dist.jobs.downstream:DownstreamConfig",
}
"""Job name (folder under ``jobs/configs/``) → ``module:Class`` of its config."""


def config_class(job: str) -> type:
    """The config dataclass of ``job`` (presets live in ``jobs/configs/<job>/*.yaml``)."""
    if job not in JOB_CONFIGS:
        raise ConfigError(f"unknown job {job!r}; known jobs: {sorted(JOB_CONFIGS)}")
    module, _, name = JOB_CONFIGS[job].partition(":")
    return getattr(importlib.import_module(module), name)
