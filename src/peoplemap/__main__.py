"""`python -m peoplemap` runs the CLI."""
from .cli import main

main()
