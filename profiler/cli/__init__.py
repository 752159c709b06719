"""The `hired-bench` command line: one short module per command, common options defined once
(profiler.cli.options). reports.cli adds `report` and `compare` and is the console entry point."""

from __future__ import annotations

import logging
import sys

from profiler.cli import boundary, env, methods, predict, run, selection, sweep
from profiler.cli.common import app, err, fail

__all__ = ["app", "err", "fail", "main"]

# the order `hired-bench --help` lists them in
app.command()(run.run)
app.command()(env.env)
app.command("show-selection")(selection.show_selection)
app.command()(sweep.sweep)
app.command("oom-boundary")(boundary.oom_boundary)
app.command()(predict.predict)
app.command()(methods.methods)


def main() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: every point measured so far is in the results file", highlight=False)
        sys.exit(130)
