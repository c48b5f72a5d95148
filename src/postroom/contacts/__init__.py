"""Contacts: fields and their validation, import and export, lists, segments, suppression."""
