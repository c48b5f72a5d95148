"""Keys, signed tokens and encrypted stored secrets."""
