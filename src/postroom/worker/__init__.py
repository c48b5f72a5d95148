"""The scheduler and the worker loop shared by ``serve`` and ``worker``."""
