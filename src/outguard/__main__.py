"""`python -m outguard` runs the command-line interface."""

from outguard.cli.main import main

main()
