"""Open and click tracking."""
