"""`python -m trace_builder` is the `trace-build` command."""

from trace_builder.cli import main

main()
