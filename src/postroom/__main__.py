"""``python -m postroom`` is the ``postroom`` command."""

from postroom.cli import main

main()
