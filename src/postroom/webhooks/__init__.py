"""Outbound webhooks: endpoints, Standard Webhooks signing, retries from the events outbox."""
