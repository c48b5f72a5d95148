"""Turning a rendered message into signed bytes ready for SMTP."""
