"""``python -m physid``: the same as the ``physid`` command."""

from physid.app.cli import main

if __name__ == "__main__":
    main()
