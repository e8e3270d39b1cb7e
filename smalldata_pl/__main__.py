"""``python -m smalldata_pl`` runs the ``smalldata`` command."""

from smalldata_pl.cli import main

if __name__ == "__main__":
    main()
