"""gmai-build: turn medical imaging datasets into a GMAI-MMBench-style VQA benchmark.

The folder ``builder/`` installs as the import package ``gmai_build`` (see pyproject.toml) so it
never collides with another top-level ``builder`` package.
"""

__version__ = "0.1.0"
