"""``python -m saga.cli``: the ``saga`` command."""

from saga.cli import main

if __name__ == "__main__":
    main()
