"""The event log: one vocabulary, written with the change it describes."""
