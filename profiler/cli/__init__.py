"""The `hired-bench` command line: one short module per command, common options defined once
(profiler.cli.options). reports.cli adds `report` and `compare` and is the console entry point."""

from __future__ import annotations

import logging
import signal
import sys

from profiler.cli import boundary, env, evaluate, methods, predict, run, selection, serve_bench, sweep
from profiler.cli.common import app, err, fail, say

__all__ = ["app", "err", "fail", "main", "say"]

# the order `hired-bench --help` lists them in
app.command()(run.run)
app.command()(env.env)
app.command("show-selection")(selection.show_selection)
app.command()(sweep.sweep)
app.command("oom-boundary")(boundary.oom_boundary)
app.command()(predict.predict)
app.command("eval")(evaluate.evaluate)
app.command()(methods.methods)
app.command("serve-bench")(serve_bench.serve_bench)


class Interrupted(BaseException):
    """SIGINT or SIGTERM. Not a KeyboardInterrupt, which Click would turn into a silent exit first."""


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)


def optional_values(argv: list[str]) -> list[str]:
    """`--ray` with no address means `--ray auto` (Click has no option whose value may be left out)."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append("auto")
    return out


def main() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app(args=optional_values(sys.argv[1:]), prog_name="hired-bench")
    except Interrupted:
        from profiler.results.store import written

        said = ", ".join(f"{n} points recorded in {path}" for path, n in written.items())
        say(f"interrupted: {said or 'no point recorded'}")
        sys.exit(130)
