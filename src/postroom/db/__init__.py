"""Engine, sessions, migrations and query helpers."""
