"""One base class for every error that means "fix your input".

A job driver prints any :class:`UserError` as one ``error: <message>`` line and exits with status 2
(:func:`braintune_dist.experiment.launch.run_main`); every other exception is a bug and keeps its traceback.
Messages name the file or field at fault and, where there is one, the fix.
"""


class UserError(ValueError):
    """Bad input: a config field, a dataset file, a checkpoint, a shard, a cluster that cannot run the job."""


class OutputExistsError(UserError, FileExistsError):
    """A writer would replace finished output without being told to (the message names the overwrite field)."""


class DatasetError(UserError):
    """Bad or inconsistent input data; the message names the offending file or field."""


SAVED: list[str] = []
"""What this process has saved that a rerun picks up (checkpoints, caches), newest last: a job driver
stopped by Ctrl-C prints it with how to resume."""


def note_saved(text: str) -> None:
    """Record one thing a rerun would resume from (shown if the job is interrupted)."""
    if text not in SAVED:
        SAVED.append(text)
