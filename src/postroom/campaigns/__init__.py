"""Broadcast campaigns: state machine, test sends, scheduling, fan-out, progress."""
