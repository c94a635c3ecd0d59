"""`python -m peoplemap.cli` runs the CLI (as `python -m peoplemap` does)."""
from . import main

main(prog_name="peoplemap")
