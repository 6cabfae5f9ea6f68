"""``python -m edgefleet`` runs the command line."""

from edgefleet.cli.main import main

main()
