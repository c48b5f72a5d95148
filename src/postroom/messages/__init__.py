"""Transactional messages: ``/v1/messages``."""
