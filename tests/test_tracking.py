"""MLflow tracking that cannot stop a job: an unreachable server costs one warning and seconds, not minutes.
(The server dying mid-training, and its runs surviving a restart, is in test_train_ray.py.)"""
import contextlib
import os
import time
import warnings

from braintune_dist.tracking import Stopped, Tracker, TrackingConfig, flatten

from servers import free_port


def test_unreachable_server_warns_once_within_seconds(monkeypatch):
    """Nothing listens on the port: with MLflow's defaults opening the run alone takes ≈ 250 s (7 retries with
    exponential backoff, measured); bounded, the whole run's logging takes seconds and warns once."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.setenv(name, "")                        # restored after the test: the Tracker sets them
        monkeypatch.delenv(name)
    tracker = Tracker(TrackingConfig(uri=f"http://127.0.0.1:{free_port()}", http_retries=1))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "20"
    t = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracker.start("offline", params={"a": {"b": 1}}, tags={"job": "test"}) as tr:
            assert tr.run_id is None                        # training goes on without a run
            for step in range(20):
                tr.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            tr.log_text("text", "t.txt")
            tr.set_tags({"k": "v"})
    mlflow_warnings = [str(w.message) for w in caught if "MLflow" in str(w.message)]
    assert len(mlflow_warnings) == 1 and "Continuing without tracking" in mlflow_warnings[0]
    assert f"127.0.0.1:{tracker.uri.rsplit(':', 1)[1]}" in mlflow_warnings[0]     # names the server
    assert time.time() - t < 20


def test_disabled_tracker_is_a_no_op(tmp_path):
    with Tracker(TrackingConfig(enabled=False)).start("x", params={"a": 1}) as tr:
        tr.log_metrics({"m": 1.0})
        assert tr.run_id is None and tr.failures == 0
    assert flatten({"a": {"b": 1}, "c": [1, 2]}) == {"a.b": "1", "c": "[1, 2]"}


def test_run_status_says_how_the_run_ended(tmp_path):
    """A run that raised is FAILED, one stopped by Ctrl-C or by a scheduler (``Stopped``) KILLED, only a completed
    one FINISHED (real sqlite store)."""
    import mlflow
    import pytest
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = {}
    for name, exc in (("ok", None), ("bug", RuntimeError("boom")), ("ctrl-c", KeyboardInterrupt()),
                      ("exit-0", SystemExit(0)), ("exit-2", SystemExit(2)),
                      ("stopped", Stopped("Tune stopped this trial"))):
        tracker = Tracker(TrackingConfig(uri=uri, experiment="status"))
        with pytest.raises(type(exc)) if exc is not None else contextlib.nullcontext():
            with tracker.start(name) as tr:
                ids[name] = tr.run_id
                if exc is not None:
                    raise exc
    client = mlflow.tracking.MlflowClient(uri)
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"ok": "FINISHED", "bug": "FAILED", "ctrl-c": "KILLED", "exit-0": "FINISHED", "exit-2": "FAILED",
                      "stopped": "KILLED"}


def test_a_store_that_turns_read_only_mid_run_warns_once_and_says_failed(tmp_path, capfd):
    """(A store read-only from the start is refused by the jobs' preflight: test_bad_input.py.) No SQLAlchemy
    traceback, one warning, and the job's last line says logging FAILED, not where the run is."""
    from readonly import read_only
    db = tmp_path / "store" / "mlflow.db"
    tracker = Tracker(TrackingConfig(uri=f"sqlite:///{db}", experiment="ro", pause_after_failure=0.0))
    with warnings.catch_warnings(record=True) as caught, contextlib.ExitStack() as stack:
        warnings.simplefilter("always")
        with tracker.start("turns-read-only") as tr:
            run_id = tr.run_id
            assert tracker.outcome(run_id) == f"run {run_id} in sqlite:///{db}"
            stack.enter_context(read_only(db.parent))     # undone after the run's end was tried
            tr.log_metrics({"loss": 1.0}, step=0)
            tr.set_tags({"k": "v"})
    mlflow_warnings = [str(w.message) for w in caught if "MLflow" in str(w.message)]
    assert len(mlflow_warnings) == 1 and "OperationalError" in mlflow_warnings[0], mlflow_warnings
    assert tracker.failures == 3 and not tracker.logged(run_id)          # metrics, tags, end_run
    assert tracker.outcome(run_id) == (f"logging FAILED at sqlite:///{db}: 3 call(s) failed, 0 skipped (the warning "
                                       f"above says why); run {run_id} is incomplete")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "SQLAlchemy database error" not in err, err
    assert Tracker(TrackingConfig(enabled=False)).outcome(None).startswith("tracking off")
