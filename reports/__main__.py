"""`python -m reports`: the hired-bench command line (what the GPU study runs without an install)."""

from reports.cli import main

main()
