"""Config machinery: YAML presets, CLI overrides, --help, errors; and every shipped YAML loads."""
import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from braintune_dist.config import (JOB_CONFIGS, ConfigError, config_class, field_docs, from_dict, load_yaml,
                                   parse_cli, save_yaml, to_dict)

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Inner:
    rank: int = 8
    """LoRA rank."""
    targets: list[str] = dataclasses.field(default_factory=lambda: ["q_proj", "v_proj"])
    """Modules to adapt."""


@dataclasses.dataclass
class Outer:
    """A toy job config."""

    name: str = "demo"
    """Run name."""
    lr: float = 1e-4
    """Learning rate."""
    bf16: bool = False
    """Use bfloat16."""
    loss: Literal["l2", "corr"] = "l2"
    """Loss type."""
    limit: Optional[int] = None
    """Optional cap."""
    inner: Inner = dataclasses.field(default_factory=Inner)
    """Nested block."""


def test_docs_defaults_and_round_trip(tmp_path):
    assert field_docs(Outer)["lr"] == "Learning rate." and field_docs(Inner)["rank"] == "LoRA rank."
    cfg = Outer(lr=3e-4, inner=Inner(rank=4))
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == cfg
    assert to_dict(cfg)["inner"] == {"rank": 4, "targets": ["q_proj", "v_proj"]}


def test_cli_precedence_and_types(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"lr": 0.5, "inner": {"rank": 16}, "name": "preset"}))
    cfg = parse_cli(Outer, ["--config", str(tmp_path / "p.yaml"), "--name", "cli", "--bf16", "true",
                            "--inner.targets", "q_proj,k_proj", "--limit", "3", "--loss", "corr"])
    assert cfg == Outer(name="cli", lr=0.5, bf16=True, loss="corr", limit=3,
                        inner=Inner(rank=16, targets=["q_proj", "k_proj"]))
    assert parse_cli(Outer, ["--limit", "none"]).limit is None


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        parse_cli(Outer, ["--help"])
    out = capsys.readouterr().out
    for flag, doc in [("--lr", "Learning rate."), ("--inner.rank", "LoRA rank."), ("--loss", "Loss type.")]:
        assert flag in out and doc in out


@pytest.mark.parametrize("data, match", [
    ({"lrr": 1}, r"unknown field\(s\) \['lrr'\]"),
    ({"inner": {"rnak": 2}}, r"config.inner: unknown field\(s\) \['rnak'\]"),
    ({"loss": "mse"}, r"config.loss: 'mse' is not one of \['l2', 'corr'\]"),
    ({"bf16": "maybe"}, r"config.bf16: 'maybe' is not a boolean"),
    ({"inner": {"rank": 2.5}}, r"config.inner.rank: 2.5 is not an integer"),
    ({"lr": "fast"}, r"config.lr: cannot read 'fast'"),
])
def test_errors_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data)


def test_cli_errors_exit_with_message(capsys, tmp_path):
    with pytest.raises(SystemExit):
        parse_cli(Outer, ["--loss", "mse"])
    assert "'mse' is not one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_cli(Outer, ["--config", str(tmp_path / "missing.yaml")])
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(Outer, bad)


SHIPPED = sorted((REPO / "jobs" / "configs").glob("*/*.yaml"))


def test_there_are_shipped_presets():
    assert SHIPPED, "jobs/configs/<job>/*.yaml presets are missing"
    assert {p.parent.name for p in SHIPPED} <= set(JOB_CONFIGS)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_yaml_loads(path):
    cls = config_class(path.parent.name)
    cfg = load_yaml(cls, path)
    assert dataclasses.is_dataclass(cfg)
    # a preset is a complete, valid config: its round trip is stable
    assert from_dict(cls, to_dict(cfg)) == cfg
