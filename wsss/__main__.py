"""``python -m wsss`` runs the command-line interface."""

from wsss.main import main

main()
