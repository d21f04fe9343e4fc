"""Command-line entry points, one module each: ``train``, ``diagnose``, ``sweep``, ``report``,
``bench``. Each composes its input, calls one tool, and turns the tool's errors into one line
and an exit code. pyproject installs them as ``initbench-<name>``; ``src/*.py`` and
``scripts/*.py`` are the same entry points for a clone."""
