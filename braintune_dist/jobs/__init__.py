"""One module per job: its config (composed of stage configs), its preflight and ``run(cfg)``.
``jobs/*.py`` at the repository root are the thin command-line drivers."""
