"""Background jobs: a table claimed with leases, run by ``serve`` and ``worker``."""
