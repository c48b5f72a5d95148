"""What mailbox providers send back: bounces, complaints, replies; inbound SMTP and
provider webhooks."""
