"""``python -m saga``: the ``saga`` command (``saga.cli``)."""

from saga.cli import main

if __name__ == "__main__":
    main()
