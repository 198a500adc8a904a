"""``python -m weightmaps`` runs the CLI."""

from weightmaps.cli import main

main()
