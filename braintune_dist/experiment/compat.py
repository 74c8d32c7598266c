"""Every use of another library's private API, each behind one small named function.

braintune_dist needs a few things Ray, DeepSpeed, transformers and jsonargparse do not offer publicly: Ray
Train's Ctrl-C hook, Tune's per-trial stop event, Ray Train's record of a run's checkpoints, DeepSpeed's table
of buildable ops, HuBERT's front-end freeze and the wording of jsonargparse's errors. Each shim

* trusts the internal only on the upstream versions in ``TESTED`` (looked up when the shim is used, not at
  import). Elsewhere it raises :class:`CompatError` naming the package, its version, the internal and what to
  check, or, where a public way does the same job, takes that instead;
* checks that the internal is still there in the expected shape, and raises :class:`CompatError` naming the
  upstream change rather than an ``AttributeError`` deep inside a Ray worker.

``INTERNALS`` lists the private names: ``tests/test_compat.py`` checks that none appears elsewhere in the
package, and that each shim still fits the installed upstream. Importing this module imports neither torch
nor ray.
"""
from __future__ import annotations

import functools
import importlib.metadata
import inspect
import json
import logging
import re
import threading
import warnings
from pathlib import Path

from packaging.version import Version

TESTED = {                        # package: the versions [from, below) the shims were written for
    "ray": ("2.40", "3"),
    "transformers": ("4.45", "6"),
    "deepspeed": ("0.16", "0.20"),
    "jsonargparse": ("4.40", "5"),
}

INTERNALS = {                     # private upstream name: the shim that uses it
    "_register_sigint_handler": "with_sigint_handler (ray)",
    "._internal": "tune_stop_event (ray)",
    ".stop_event": "tune_stop_event (ray)",
    "checkpoint_manager_snapshot": "train_checkpoints (ray)",
    "latest_checkpoint_result": "train_checkpoints (ray)",
    "checkpoint_dir_name": "train_checkpoints (ray)",
    "._private": "ray_data_console_handlers (ray)",
    "PlainRayHandler": "ray_data_console_handlers (ray)",
    "__compatible_ops__": "skip_cpu_shm_op (deepspeed)",
    "_freeze_parameters": "freeze_feature_encoder (transformers)",
}

HERE = "braintune_dist/experiment/compat.py"


class CompatError(RuntimeError):
    """An upstream library is a version braintune_dist was not tested with, or lacks an internal it relies on."""


@functools.cache
def installed(package: str) -> str:
    """The installed version of ``package`` (a distribution name)."""
    return importlib.metadata.version(package)


def in_tested_range(package: str, version: str | None = None) -> bool:
    """Whether ``version`` of ``package`` (default: the installed one) is within ``TESTED[package]``."""
    lo, hi = TESTED[package]
    return Version(lo) <= Version(version or installed(package)) < Version(hi)


def require(package: str, internal: str, check: str, version: str | None = None) -> None:
    """Raise :class:`CompatError` unless ``package`` is a tested version.

    Parameters
    ----------
    package : distribution name, a key of ``TESTED``.
    internal : the private name relied on, as the message shows it.
    check : what to verify in the new version's source before widening the range.
    version : the version to judge; default the installed one.
    """
    version = version or installed(package)
    if not in_tested_range(package, version):
        lo, hi = TESTED[package]
        raise CompatError(
            f"{package} {version} is outside the versions braintune_dist was tested with ({lo} <= version < {hi}), "
            f"and braintune_dist relies on its internal {internal}. Check that {check}; then widen "
            f"TESTED[{package!r}] in {HERE}, or install {package}>={lo},<{hi}")


def _gone(package: str, internal: str, change: str, purpose: str) -> CompatError:
    return CompatError(f"{package} {installed(package)} changed {internal}: {change}. braintune_dist uses it to "
                       f"{purpose}; adapt {HERE} to this {package}")


# ---------------------------------------------------------------- Ray Train: Ctrl-C
def with_sigint_handler(trainer_cls: type) -> type:
    """A subclass of the Ray Train trainer class ``trainer_cls`` whose Ctrl-C handler is
    ``self.sigint_handler(controller)``, a method the caller's subclass defines.

    ``fit()`` installs Ray Train's own SIGINT handler, which holds the run's controller actor, through a private
    method (on the main thread only). No public API hands out the controller, so the subclass overrides it.
    """
    internal = f"{trainer_cls.__name__}._register_sigint_handler(self, controller)"
    require("ray", internal, "fit() still calls it with the run's controller actor, whose abort.remote() stops the run")
    hook = getattr(trainer_cls, "_register_sigint_handler", None)
    params = list(inspect.signature(hook).parameters) if callable(hook) else None
    if params != ["self", "controller"]:
        raise _gone("ray", internal, "no such method" if params is None else f"its parameters are {params}",
                    "tell a Ctrl-C apart from a finished run")

    class SigintHooked(trainer_cls):
        def _register_sigint_handler(self, controller):
            import signal
            signal.signal(signal.SIGINT, self.sigint_handler(controller))

    return SigintHooked


# ---------------------------------------------------------------- Ray Tune: a trial's stop
def tune_stop_event() -> threading.Event:
    """The event Tune sets when it stops the function-trainable trial running in this process; outside a Tune
    trial a new event that nothing sets. No public API exposes it."""
    internal = "ray.train._internal.session.get_session().stop_event"
    require("ray", internal, "Tune's FunctionTrainable still runs each trial under that session and sets its "
                             "stop_event when it stops the trial")
    purpose = "tell a trial Tune stopped (ASHA) apart from one that failed"
    try:
        from ray.train._internal.session import get_session
    except ImportError as exc:
        raise _gone("ray", internal, f"it cannot be imported ({exc})", purpose) from None
    session = get_session()
    if session is None:
        return threading.Event()
    event = getattr(session, "stop_event", None)
    if not isinstance(event, threading.Event):
        raise _gone("ray", internal, f"the session's stop_event is {event!r}, not a threading.Event", purpose)
    return event


# ---------------------------------------------------------------- Ray Train: a run's checkpoints
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"   # Ray Train V2's own record of a run's checkpoints


def train_checkpoints(run_dir: str | Path) -> dict | None:
    """Ray Train's record of the checkpoints of the run in ``run_dir``, which a rerun of the run resumes from.

    Returns
    -------
    ``{"checkpoints": [{"dir": name, "metrics": {...}}, ...], "latest": name or None}`` (names relative to
    ``run_dir``), or None where the run has recorded none.

    Raises
    ------
    ValueError naming the file where it cannot be read or parsed (e.g. caught mid-write); CompatError where its
    layout is not the one tested (Ray Train writes it for itself; no public API reads it without Ray Train
    validating every checkpoint too).
    """
    path = Path(run_dir) / RAY_SNAPSHOT
    if not path.is_file():
        return None
    internal = f"the layout of Ray Train's {RAY_SNAPSHOT}"
    require("ray", internal, "the file still holds checkpoint_results and latest_checkpoint_result, each entry "
                             "a checkpoint_dir_name and metrics (entry version 0)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc})") from None
    purpose = "find the checkpoint a rerun resumes from"

    def entry(e) -> dict:
        if not (isinstance(e, dict) and isinstance(e.get("checkpoint_dir_name"), str)
                and isinstance(e.get("metrics"), dict) and e.get("version", 0) == 0):
            raise _gone("ray", internal, f"{path} has a checkpoint entry {e!r}", purpose)
        return {"dir": e["checkpoint_dir_name"], "metrics": e["metrics"]}

    if not (isinstance(data, dict) and isinstance(data.get("checkpoint_results"), list)
            and "latest_checkpoint_result" in data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise _gone("ray", internal, f"{path} holds {keys}", purpose)
    latest = data["latest_checkpoint_result"]
    return {"checkpoints": [entry(e) for e in data["checkpoint_results"]],
            "latest": None if latest is None else entry(latest)["dir"]}


# ---------------------------------------------------------------- Ray Data: its console output
def ray_data_console_handlers() -> list[logging.Handler]:
    """The handlers through which Ray Data prints its log records (plans, timings) to the console, not the one
    writing its ray-data.log file. Ray Data installs them as a private class; other stream handlers on its logger
    (a user's, pytest's) are not Ray Data's to quiet."""
    internal = "ray._private.log.PlainRayHandler (Ray Data's console log handler)"
    require("ray", internal, "Ray Data's default logging config still prints through that class and writes "
                             "ray-data.log through another")
    try:
        cls = importlib.import_module("ray._private.log").PlainRayHandler
    except (ImportError, AttributeError) as exc:
        raise _gone("ray", internal, f"it cannot be imported ({exc})", "keep Ray Data's lines off a job's console "
                    "(--verbose shows them)") from None
    return [h for h in logging.getLogger("ray.data").handlers if type(h) is cls]


# ---------------------------------------------------------------- DeepSpeed: the CPU shared-memory op
def skip_cpu_shm_op() -> None:
    """Make DeepSpeed's CPU collectives plain gloo instead of its shared-memory op, which it JIT-builds (25-60 s
    of g++) whenever its table of compatible ops says it can: no setting turns the op off, so its entry is set
    False. DeepSpeed probes the table once per process and keeps it, so the edit lasts."""
    internal = "deepspeed.ops.__compatible_ops__['deepspeed_shm_comm']"
    require("deepspeed", internal, "deepspeed.comm.torch.build_shm_op still builds no op when that entry is False")
    import deepspeed.ops
    table = getattr(deepspeed.ops, "__compatible_ops__", None)
    if not isinstance(table, dict):
        raise _gone("deepspeed", internal, f"deepspeed.ops.__compatible_ops__ is {type(table).__name__}, not a dict",
                    "skip the shared-memory op's build on CPU (engine.skip_cpu_shm_build false runs without it)")
    table["deepspeed_shm_comm"] = False


# ---------------------------------------------------------------- transformers: the frozen CNN front end
def freeze_feature_encoder(model) -> None:
    """Freeze the convolutional front end of an HF wav2vec2 or HuBERT model: its weights, and the input gradient
    it otherwise asks for in training mode (for gradient checkpointing), a backward pass through frozen layers.

    ``Wav2Vec2Model`` does both publicly; ``HubertModel`` only through its encoder's private method. Where that
    is missing or transformers untested, the weights are frozen publicly: the same training, a slower backward.
    """
    public = getattr(model, "freeze_feature_encoder", None)
    if callable(public):
        public()
        return
    encoder = model.feature_extractor
    private = getattr(encoder, "_freeze_parameters", None)
    if callable(private) and in_tested_range("transformers"):
        private()
        return
    warnings.warn(f"transformers {installed('transformers')}: {type(encoder).__name__}._freeze_parameters is "
                  f"{'untested' if callable(private) else 'gone'} here, so only the front end's weights are frozen "
                  f"(requires_grad_(False)): the same training, but backward runs through the front end. See {HERE}",
                  stacklevel=2)
    encoder.requires_grad_(False)


# ---------------------------------------------------------------- jsonargparse: one-line errors
def _type_name(text: str) -> str:
    """``<class 'int'>`` → ``int``; ``typing.Literal['a', 'b']`` → ``one of ['a', 'b']``; ``<class 'list'>`` →
    ``a list such as [a,b]`` (the CLI syntax of a list)."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    text = re.sub(r"typing\.Literal\[(.*)\]$", r"one of [\1]", text)
    text = re.sub(r"^(?:typing\.)?(?:List|list)(\[.*\])?$", "a list such as [a,b]", text)
    return text


def jsonargparse_message(exc: BaseException) -> str:
    """A jsonargparse error as one line, ``field: expected T, got V``: its messages span lines and repeat the
    alternatives of a union. The rewriting matches the wording of the tested jsonargparse versions; with any
    other, the message is jsonargparse's own, on one line."""
    msg = " ".join(str(exc).split())
    if not in_tested_range("jsonargparse"):
        return msg
    msg = re.sub(r"^Parser key \"([^\"]+)\": ", r"\1: ", msg)
    msg = msg.split(" - Expected a ")[0].split(" Given value type:")[0]
    m = re.match(r"^(.*?)Expected a (.+?)\. Got value: (.*)$", msg)
    if m:
        msg = f"{m.group(1)}expected {_type_name(m.group(2))}, got {m.group(3)!r}"
    # typed ranges (PositiveInt, ClosedUnitInterval, ...): 'field: must be v>0, got 0' / 'expected int, got ...'
    m = re.match(r"^(.*?)Not of type (\w+): invalid literal for (int|float)\(\)(?: with base 10)?: (.*)$", msg)
    if m:
        return f"{m.group(1)}expected {m.group(3)}, got {m.group(4)}"
    m = re.match(r"^(.*?)Not of type \w+: could not convert string to (float): (.*)$", msg)
    if m:
        return f"{m.group(1)}expected {m.group(2)}, got {m.group(3)}"
    m = re.match(r"^(.*?)Not of type \w+: (.*?) does not conform to restriction (.+)$", msg)
    if m:
        msg = f"{m.group(1)}must be {m.group(3)}, got {m.group(2)}"
    return msg
