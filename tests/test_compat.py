"""Upstream internals (braintune_dist/experiment/compat.py): each shim against the installed Ray, DeepSpeed,
transformers and jsonargparse; the version guard's message; no private name used anywhere else in the package."""
from __future__ import annotations

import dataclasses
import inspect
import logging
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import braintune_dist
from braintune_dist.experiment import compat

REPO = Path(__file__).resolve().parents[1]
RUN = Path(__file__).parent / "data" / "ray_train_run"       # the run folder of a real Ray Train 2.60 fit
LATEST = "checkpoint_2026-12-07_20-56-12.441817"
REMOVED = ("_from_model_config",)                            # privates replaced by public API


def test_installed_versions_are_tested_ones():
    for package in compat.TESTED:
        assert compat.in_tested_range(package), f"{package} {compat.installed(package)}: review compat.py's shims"


def test_version_guard_names_package_version_internal_and_check():
    compat.require("ray", "X._hook", "it is still called", version="2.60.0")
    for version in ("3.0.0", "2.39.9"):
        with pytest.raises(compat.CompatError, match=rf"^ray {version} is outside the versions braintune_dist was "
                           r"tested with \(2\.40 <= version < 3\), and braintune_dist relies on its internal "
                           r"X\._hook\. Check that it is still called; then widen TESTED\['ray'\] in "
                           r"braintune_dist/experiment/compat\.py, or install ray>=2\.40,<3$"):
            compat.require("ray", "X._hook", "it is still called", version=version)
    assert compat.in_tested_range("deepspeed", "0.19.8") and not compat.in_tested_range("deepspeed", "0.20.0")


def test_private_names_appear_only_in_compat():
    package = Path(braintune_dist.__file__).parent
    names = [*compat.INTERNALS, *REMOVED]
    found = [(str(p.relative_to(package)), n) for p in sorted(package.rglob("*.py"))
             if p.name != "compat.py" or p.parent.name != "experiment"
             for n in names if n in p.read_text()]
    assert not found


def test_compat_imports_neither_torch_nor_ray():
    code = "import sys, braintune_dist.experiment.compat; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- Ray Train: Ctrl-C
def test_sigint_hook_exists_is_called_by_fit_and_installs_our_handler():
    from ray.train.torch import TorchTrainer
    owner = next(c for c in TorchTrainer.__mro__ if "_register_sigint_handler" in vars(c))
    assert list(inspect.signature(owner._register_sigint_handler).parameters) == ["self", "controller"]
    assert "self._register_sigint_handler(controller)" in inspect.getsource(owner)    # fit()'s controller path

    hooked = compat.with_sigint_handler(TorchTrainer)
    assert issubclass(hooked, TorchTrainer)
    seen = []
    fake = SimpleNamespace(sigint_handler=lambda controller: lambda signum, frame: seen.append(controller))
    previous = signal.getsignal(signal.SIGINT)
    try:
        hooked._register_sigint_handler(fake, "controller")
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == ["controller"]


def test_sigint_hook_gone_is_named():
    class Other:
        pass
    with pytest.raises(compat.CompatError, match=r"changed Other\._register_sigint_handler.*no such method.*Ctrl-C"):
        compat.with_sigint_handler(Other)


# ---------------------------------------------------------------- Ray Tune: a trial's stop
def test_tune_stop_event_outside_a_trial_and_the_session_that_sets_it():
    event = compat.tune_stop_event()
    assert isinstance(event, threading.Event) and not event.is_set()
    from ray.train._internal import session
    from ray.tune.trainable.function_trainable import FunctionTrainable
    assert "self.stop_event.set()" in inspect.getsource(session._TrainSession.finish)
    assert "session.finish(" in inspect.getsource(FunctionTrainable.cleanup)      # a stopped trial's teardown


# ---------------------------------------------------------------- Ray Train: a run's checkpoints
def test_train_checkpoints_reads_a_real_record_as_ray_train_does(tmp_path):
    run = shutil.copytree(RUN, tmp_path / "run")
    rec = compat.train_checkpoints(run)
    assert rec["latest"] == LATEST
    assert sorted((c["metrics"]["epoch"], c["metrics"]["val_loss"]) for c in rec["checkpoints"]) == [(1, 0.3), (2, 0.4)]
    assert compat.train_checkpoints(tmp_path) is None                           # no record: a fresh run
    for c in rec["checkpoints"]:
        (run / c["dir"]).mkdir()
    import ray.train                                                            # Ray's public reader, same file
    result = ray.train.Result.from_path(str(run))
    assert Path(result.checkpoint.path).name == LATEST
    assert {Path(c.path).name for c, _ in result.best_checkpoints} == {c["dir"] for c in rec["checkpoints"]}


def test_train_checkpoints_unreadable_or_changed(tmp_path):
    path = tmp_path / compat.RAY_SNAPSHOT
    path.write_text((RUN / compat.RAY_SNAPSHOT).read_text()[:100])              # caught mid-write
    with pytest.raises(ValueError, match=r"checkpoint_manager_snapshot\.json is unreadable \("):
        compat.train_checkpoints(tmp_path)
    path.write_text('{"checkpoints": []}')
    with pytest.raises(compat.CompatError, match=r"changed the layout .* holds \['checkpoints'\]\. .*resumes from"):
        compat.train_checkpoints(tmp_path)
    path.write_text('{"checkpoint_results": [], "latest_checkpoint_result": '
                    '{"version": 1, "checkpoint_dir_name": "c", "metrics": {}}}')
    with pytest.raises(compat.CompatError, match=r"has a checkpoint entry .*'version': 1"):
        compat.train_checkpoints(tmp_path)


def test_preflight_refuses_to_resume_a_broken_latest_checkpoint(tmp_path):
    from braintune_dist.experiment.preflight import resume_problems
    shutil.copytree(RUN, tmp_path / "run")
    ray_cfg = SimpleNamespace(run_name="run", storage_path=str(tmp_path))
    (tmp_path / "run" / LATEST).mkdir()
    assert resume_problems(ray_cfg) == [
        f"fit.ray.run_name 'run' would resume from a broken checkpoint: incomplete checkpoint {tmp_path / 'run' / LATEST}"
        ": missing model.safetensors (the write was interrupted; use an earlier checkpoint). "
        f"Remove {tmp_path / 'run'} or choose another fit.ray.run_name"]
    (tmp_path / "run" / compat.RAY_SNAPSHOT).write_text("{")
    assert resume_problems(ray_cfg)[0].startswith(f"fit.ray.run_name 'run': {tmp_path / 'run' / compat.RAY_SNAPSHOT} "
                                                  "is unreadable (")
    assert resume_problems(SimpleNamespace(run_name="new", storage_path=str(tmp_path))) == []


# ---------------------------------------------------------------- DeepSpeed: the CPU shared-memory op
def test_skip_cpu_shm_op_edits_the_table_deepspeed_consults():
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from deepspeed.comm.torch import build_shm_op
    compat.skip_cpu_shm_op()
    assert isinstance(deepspeed.ops.__compatible_ops__, dict)
    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False
    # build_shm_op builds the op named by the builder's NAME only where that table entry is true
    assert "__compatible_ops__.get(builder.NAME" in inspect.getsource(build_shm_op)
    if get_accelerator().device_name() == "cpu":
        assert get_accelerator().create_op_builder("ShareMemCommBuilder").NAME == "deepspeed_shm_comm"


# ---------------------------------------------------------------- transformers: the frozen CNN front end
def _tiny(family: str):
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model
    from braintune_dist.model.backbone import TINY_SPEECH
    cfg_cls, model_cls = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel)}[family]
    return model_cls(cfg_cls(**TINY_SPEECH)).train()


def _frozen(model) -> bool:
    """Front-end weights frozen, and no gradient asked for through it in training mode."""
    import torch
    out = model.feature_extractor(torch.zeros(1, 400))
    return not any(p.requires_grad for p in model.feature_extractor.parameters()) and not out.requires_grad


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_freeze_feature_encoder(family):
    model = _tiny(family)
    assert not _frozen(model)
    compat.freeze_feature_encoder(model)
    assert _frozen(model)


def test_freeze_feature_encoder_falls_back_to_public_on_untested_transformers(monkeypatch):
    monkeypatch.setitem(compat.TESTED, "transformers", ("0.1", "0.2"))
    model = _tiny("hubert")
    with pytest.warns(UserWarning, match=r"HubertFeatureEncoder\._freeze_parameters is untested here"):
        compat.freeze_feature_encoder(model)
    assert not any(p.requires_grad for p in model.feature_extractor.parameters())


# ---------------------------------------------------------------- jsonargparse: one-line errors
@dataclasses.dataclass
class Small:
    n: int = 1
    """A count."""


def test_jsonargparse_message(monkeypatch):
    from braintune_dist.config import parser
    with pytest.raises(Exception) as err:
        parser(Small).parse_object({"n": "two"})
    assert compat.jsonargparse_message(err.value) == "n: expected int, got 'two'"
    monkeypatch.setitem(compat.TESTED, "jsonargparse", ("0.1", "0.2"))      # untested: jsonargparse's own words
    assert compat.jsonargparse_message(err.value) == " ".join(str(err.value).split())


# ---------------------------------------------------------------- Ray Data: its console output
def test_ray_data_console_handlers_are_its_console_not_its_file():
    import ray.data  # noqa: F401  (importing it configures the "ray.data" logger)
    handlers = compat.ray_data_console_handlers()
    assert [h.get_name() for h in handlers] == ["console"]                     # as Ray Data's config names it
    assert isinstance(handlers[0], logging.StreamHandler)
    assert "file" in [h.get_name() for h in logging.getLogger("ray.data").handlers]
