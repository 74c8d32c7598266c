"""Config machinery (jsonargparse): YAML presets, dotted CLI overrides, --help / --print_config, one-line errors
naming the file or the field, checks in __post_init__; every shipped YAML loads; every job driver answers
--help and --print_config and turns bad input into one ``error:`` line with exit status 2."""
import dataclasses
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from braintune_dist.config import JOB_CONFIGS, ConfigError, config_class, from_dict, load_yaml, parse_cli, save_yaml, to_dict
from braintune_dist.experiment.launch import run_main

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Inner:
    rank: int = 8
    """LoRA rank."""
    targets: list[str] = dataclasses.field(default_factory=lambda: ["q_proj", "v_proj"])
    """Modules to adapt."""

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"inner.rank: {self.rank} must be >= 1")


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


def test_defaults_and_round_trip(tmp_path):
    cfg = Outer(lr=3e-4, inner=Inner(rank=4))
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == cfg
    assert to_dict(cfg)["inner"] == {"rank": 4, "targets": ["q_proj", "v_proj"]}
    assert from_dict(Outer, {}) == Outer()


def test_cli_precedence_and_types(tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"lr": 0.5, "inner": {"rank": 16}, "name": "preset"}))
    cfg = parse_cli(Outer, ["--config", str(tmp_path / "p.yaml"), "--name", "cli", "--bf16", "true",
                            "--inner.targets", "[q_proj,k_proj]", "--limit", "3", "--loss", "corr"])
    assert cfg == Outer(name="cli", lr=0.5, bf16=True, loss="corr", limit=3,
                        inner=Inner(rank=16, targets=["q_proj", "k_proj"]))
    assert parse_cli(Outer, ["--limit", "null"]).limit is None
    # a list field also takes a,b or a single value
    assert parse_cli(Outer, ["--inner.targets", "q_proj,k_proj"]).inner.targets == ["q_proj", "k_proj"]
    assert parse_cli(Outer, ["--inner.targets=o_proj"]).inner.targets == ["o_proj"]


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_cli(Outer, ["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for flag, doc in [("--lr", "Learning rate."), ("--inner.rank", "LoRA rank."), ("--loss", "Loss type.")]:
        assert flag in out and doc in out


@pytest.mark.parametrize("data, match", [
    ({"lrr": 1}, r"^x.yaml: lrr: unknown field; Outer has \['bf16', 'inner'"),
    ({"inner": {"rnak": 2}}, r"^x.yaml: inner.rnak: unknown field; inner has \['rank', 'targets'\]$"),
    ({"inner": 3}, r"^x.yaml: inner must be a mapping of field: value, got 3$"),
    ({"loss": "mse"}, r"^x.yaml: loss: expected one of \['l2', 'corr'\], got 'mse'$"),
    ({"bf16": "maybe"}, r"^x.yaml: bf16: expected bool, got 'maybe'$"),
    ({"inner": {"rank": 2.5}}, r"^x.yaml: inner.rank: expected int, got '2.5'$"),
    ({"inner": {"targets": "q"}}, r"^x.yaml: inner.targets: expected a list such as \[a,b\], got 'q'$"),
    ({"lr": "fast"}, r"^x.yaml: lr: expected float, got 'fast'$"),
    ({"inner": {"rank": 0}}, r"^x.yaml: inner.rank: 0 must be >= 1$"),             # __post_init__
])
def test_errors_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, data, "x.yaml")


def test_cli_errors_name_the_file_or_the_command_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: loss: expected one of \['l2', 'corr'\], got 'mse'$"):
        parse_cli(Outer, ["--loss", "mse"])
    with pytest.raises(ConfigError, match=r"^command line: inner.rnak: unknown field"):
        parse_cli(Outer, ["--inner.rnak", "3"])
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        parse_cli(Outer, ["--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "p.yaml").write_text("inner: {rank: two}\n")
    with pytest.raises(ConfigError, match=r"^.*p.yaml: inner.rank: expected int, got 'two'$"):
        parse_cli(Outer, ["--config", str(tmp_path / "p.yaml"), "--lr", "0.1"])
    (tmp_path / "bad.yaml").write_text("lr: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(Outer, tmp_path / "bad.yaml")


SHIPPED = sorted((REPO / "jobs" / "configs").glob("*/*.yaml"))


def test_there_are_shipped_presets():
    assert SHIPPED, "jobs/configs/<job>/*.yaml presets are missing"
    assert {p.parent.name for p in SHIPPED} <= set(JOB_CONFIGS)
    assert {p.stem for p in (REPO / "jobs").glob("*.py")} == set(JOB_CONFIGS)      # one driver per job config


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_yaml_loads(path):
    cls = config_class(path.parent.name)
    cfg = load_yaml(cls, path)
    assert dataclasses.is_dataclass(cfg)
    assert from_dict(cls, to_dict(cfg)) == cfg              # a preset is a complete config: its round trip is stable


@pytest.mark.parametrize("job", sorted(JOB_CONFIGS))
def test_every_driver_answers_help_and_print_config(job, capsys):
    """The driver's own ``main`` (what ``python jobs/<job>.py`` runs): --help documents the nested fields,
    --print_config prints a YAML that loads back into the same config."""
    main = runpy.run_path(str(REPO / "jobs" / f"{job}.py"), run_name="driver")["main"]
    with pytest.raises(SystemExit) as stop:
        run_main(main, ["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "--config CONFIG" in out and "(type: " in out and "default: " in out
    presets = sorted((REPO / "jobs" / "configs" / job).glob("*.yaml"))
    argv = ["--config", str(presets[0])] if presets else []
    with pytest.raises(SystemExit) as stop:
        run_main(main, [*argv, "--print_config"])
    assert stop.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_yaml(config_class(job), presets[0]) if presets else config_class(job)()
    assert from_dict(config_class(job), printed) == expected


@pytest.mark.parametrize("job, data, match", [
    ("multi_brain", {"eval": {"maps": {"threshold": -0.1}}}, r"eval.maps.threshold: -0.1 must be >= 0$"),
    ("multi_brain", {"eval": {"ridge": {"alphas": []}}}, r"ridge.alphas is empty: give at least one positive value$"),
    ("evaluate", {"eval": {"ridge": {"alphas": [1.0, -10.0]}}}, r"ridge.alphas must be positive and finite, got \[-10.\]"),
    ("multi_brain", {"eval": {"ridge": {"backend": "cuda"}}},
     r"ridge.backend: 'cuda' is not one of \['numpy', 'cupy', 'auto'\]$"),
    ("scaling", {"eval": {"efficiency_stories": [0, 2]}}, r"eval.efficiency_stories: \[0, 2\]; each refit needs"),
    ("multi_brain", {"fit": {"train": {"max_steps_per_epoch": 2}, "optim": {"grad_accum": 4}}},
     r"fit.train.max_steps_per_epoch: 2 micro-batches per epoch is fewer than fit.optim.grad_accum 4"),
    ("analyze", {"residual": {"alphas": [0.0]}}, r"residual.alphas must be positive and finite, got \[0.\]$"),
    ("analyze", {"probes": {"alphas": []}}, r"probes.alphas is empty"),
    ("analyze", {"probes": {"targets": ["syntax"]}}, r"AnalyzeConfig.probes.targets=\['syntax'\]: must be a subset"),
])
def test_stage_value_checks_name_the_field(job, data, match):
    """Value checks of the stage configs (their __post_init__) fail when the config is built, naming the field."""
    from braintune_dist.errors import UserError
    with pytest.raises(UserError, match=r"^x.yaml: " + match) as err:
        from_dict(config_class(job), data, "x.yaml")
    assert isinstance(err.value, ConfigError)


@pytest.mark.parametrize("content, extra, match", [
    ("fit: {train: {epochs: 2\n", [], r"^error: .*broken.yaml: not valid YAML"),
    ("fit: {lora: {rnak: 4}}\n", [], r"^error: .*broken.yaml: fit.lora.rnak: unknown field; fit.lora has \["),
    ("fit: {train: {epochs: two}}\n", [], r"^error: .*broken.yaml: fit.train.epochs: expected int, got 'two'$"),
    ("{}\n", ["--fit.stream.batch_size", "big"], r"^error: command line: fit.stream.batch_size: expected int"),
    ("fit: {optim: {backbone_lr: -1.0e-3}}\n", [], r"^error: .*broken.yaml: fit.optim.backbone_lr: must be v>0, got -0.001$"),
    ("{}\n", ["--fit.lora.rank", "0"], r"^error: command line: fit.lora.rank: must be v>0, got 0$"),
    ("{}\n", ["--eval.features.stride", "0"], r"^error: command line: eval.features.stride: must be v>0, got 0$"),
    ("{}\n", ["--pretrain.steps", "0"], r"^error: command line: pretrain.steps: must be v>0, got 0$"),
    ("{}\n", ["--fit.optim.warmup_frac", "1.5"], r"^error: command line: fit.optim.warmup_frac: must be v>=0 and v<=1"),
    ("{}\n", ["--eval.ridge.backend", "cuda"], r"^error: command line: ridge.backend: 'cuda' is not one of"),
], ids=["broken-yaml", "unknown-nested-field", "wrong-type-in-file", "wrong-type-on-command-line", "negative-lr",
        "lora-rank-0", "stride-0", "pretrain-steps-0", "warmup-above-1", "ridge-backend"])
def test_a_real_driver_prints_one_error_line(tmp_path, capsys, request, content, extra, match):
    """The first three cases run the driver as its own process; the value checks call its ``main`` through the
    same exit-status wrapper in this process (an interpreter start each would add ~3 s)."""
    (tmp_path / "broken.yaml").write_text(content)
    argv = ["--config", str(tmp_path / "broken.yaml"), *extra]
    if request.node.callspec.id in ("broken-yaml", "unknown-nested-field", "wrong-type-in-file"):
        proc = subprocess.run([sys.executable, str(REPO / "jobs" / "multi_brain.py"), *argv],
                              capture_output=True, text=True, timeout=120)
        code, err = proc.returncode, proc.stderr
    else:
        main = runpy.run_path(str(REPO / "jobs" / "multi_brain.py"), run_name="driver")["main"]
        capsys.readouterr()
        code, err = run_main(main, argv), capsys.readouterr().err
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert __import__("re").match(match, lines[0]), lines[0]


def test_benchmark_tables_match_their_results(tmp_path, monkeypatch):
    """BENCHMARKS.md's tables are what benchmarks/tables.py makes of benchmarks/results/*.json; a hand-edited
    number is caught."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("tables", REPO / "benchmarks" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert tables.main(["--check"]) == 0
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(tables.DOC.read_text().replace("| 7.7× fewer |", "| 9.9× fewer |"))
    monkeypatch.setattr(tables, "DOC", doc)
    assert tables.main(["--check"]) == 1
    assert tables.main([]) == 0 and tables.main(["--check"]) == 0 and "| 7.7× fewer |" in doc.read_text()


def test_trial_lines_survive_tunes_pickling(monkeypatch):
    """Tune pickles its RunConfig, callbacks included: the per-trial line printer must not carry the log function
    (here print while a library has replaced builtins.print, which pickle refuses)."""
    import builtins
    import pickle

    from ray.cloudpickle import dumps

    from braintune_dist.experiment.launch import tune_console
    original = builtins.print
    monkeypatch.setattr(builtins, "print", lambda *a, **k: original(*a, **k))
    console = tune_console(original, "sweep", 3, ("val_r",))
    assert console["verbose"] == 0                                      # Tune's tables only with --verbose
    (lines,) = console["callbacks"]
    copy = pickle.loads(dumps(lines))
    assert (copy.prefix, copy.total, copy.metrics, copy.log) == ("sweep", 3, ("val_r",), None)
