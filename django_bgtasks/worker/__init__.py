"""The worker: a supervisor forking processes, each composed by a Runner (runner.py)."""
