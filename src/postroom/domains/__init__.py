"""Sending domains: DKIM keys (with rotation), the DNS records to publish, and checks."""
