"""What every job driver does before its work: join the Ray cluster it was submitted to, or start one."""
from __future__ import annotations

import os
import signal
import sys
import threading

from braintune_dist.errors import SAVED, UserError
from braintune_dist.experiment import compat


VERBOSE_ENV = "BRAINTUNE_VERBOSE"


def connect_ray(address: str = "") -> None:
    """``ray.init`` for a job driver.

    Under ``ray job submit`` (``RAY_ADDRESS`` set) or with an explicit ``address`` it joins that cluster,
    whose job runtime_env is already in force. Otherwise it starts a local cluster bound to 127.0.0.1 and
    passes this shell's settings (loopback binding, offline HF hub, MLflow URI) to the workers.
    Workers' output (Ray Train's and Ray Data's own reports, library warnings) stays in Ray's log files
    (``/tmp/ray/session_latest/logs``) unless the driver runs with ``--verbose``: the job's stdout is its
    stage progress and its results.
    """
    import logging
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    import ray.data
    if ray.is_initialized():               # already connected (a job run inside another, or a test)
        return
    verbose = os.environ.get(VERBOSE_ENV) == "1"
    quiet = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.WARNING)
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address and address != "local":
        ray.init(address=address, **quiet)
    else:
        # address="local": without it ray.init() joins the cluster of the machine's latest `ray start`
        # (/tmp/ray/ray_current_cluster), e.g. another user's, instead of starting this job's own.
        # The dashboard (on 127.0.0.1) serves Ray's state API, which Ray Train's placement-group cleaner polls:
        # without it, a trial that Tune stops (ASHA) keeps its workers' resources until the driver exits, and a
        # sweep runs out of CPUs/GPUs
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", runtime_env={"env_vars": {
            k: os.environ[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "HF_HUB_OFFLINE", "MLFLOW_TRACKING_URI")
            if k in os.environ}}, **quiet)
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    if not verbose:       # Ray Data's per-execution lines (plans, timings) stay in its own log file, ray-data.log
        for handler in compat.ray_data_console_handlers():
            handler.setLevel(logging.ERROR)


def tune_console(log, prefix: str, total: int, metrics: tuple[str, ...] = ()) -> dict:
    """``tune.RunConfig`` arguments for a job: Tune's status tables (every 30 s) only with ``--verbose``; instead
    one line per finished trial, e.g. ``[sweep] trial 5ab0ea6b finished after 2 iteration(s): val_r 0.0975 (1/8)``.
    """
    from ray import tune

    class TrialLines(tune.Callback):
        def __init__(self, *args):              # arguments, not closure cells: Tune pickles the class with them
            self.log, self.prefix, self.total, self.metrics = args
            self.done = 0

        def __getstate__(self):                # Tune pickles its RunConfig; the log function need not travel
            return dict(self.__dict__, log=None)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.say(trial, "finished")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.say(trial, "failed")

        def say(self, trial, how: str) -> None:
            self.done += 1
            r = trial.last_result or {}
            shown = ", ".join(f"{m} {r[m]:.4g}" for m in self.metrics if isinstance(r.get(m), (int, float)))
            (self.log or print)(f"[{self.prefix}] trial {trial.trial_id} {how} after {r.get('training_iteration', 0)} "
                                f"iteration(s){': ' + shown if shown else ''} ({self.done}/{self.total})")

    return dict(verbose=2 if os.environ.get(VERBOSE_ENV) == "1" else 0, callbacks=[TrialLines(log, prefix, total, metrics)])


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's preemption or time limit): the job stops as on Ctrl-C, so its MLflow run
    ends KILLED (``Tracker.start`` treats every ``KeyboardInterrupt`` so) and the rerun that resumes is printed."""


def _terminate(signum, frame):
    raise Terminated(f"signal {signum}")


def run_main(main, argv=None) -> int:
    """Exit status of a job's ``main(argv)``: 2 with one ``error: ...`` line for bad input (any
    :class:`~braintune_dist.errors.UserError`; the message names the file or field), 130 on Ctrl-C and 143 on
    SIGTERM (128 + the signal, as a shell reports a process the signal killed), the traceback only for bugs.
    ``--verbose`` (taken out of ``argv``) shows the Ray workers' output too."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:                   # everything Ray's workers print, in this terminal too
        argv.remove("--verbose")
        os.environ[VERBOSE_ENV] = "1"
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # the MLflow run is marked KILLED by Tracker.start; say what survives and how to go on from it
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{how}: stopped before the job finished (its MLflow run is marked KILLED).", file=sys.stderr)
        for text in SAVED:
            print(f"  kept: {text}", file=sys.stderr)
        if not SAVED:
            print("  nothing resumable was saved yet; rerunning starts over.", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
    finally:
        if main_thread and previous is not None:   # a main run in-process (tests) leaves the handler as it was
            signal.signal(signal.SIGTERM, previous)
