"""Entities, rules and errors of the payment domain; no I/O here."""
