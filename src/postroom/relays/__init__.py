"""Per-workspace SMTP relays, weighted choice among them, and shared rate limits."""
