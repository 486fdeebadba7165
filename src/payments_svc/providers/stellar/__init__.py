"""Stellar: the provider (payment instructions handed out at create), reading the
receiving account's payments feed from Horizon, crediting payments from it, and the
`payments-svc stellar` commands (the ledger watcher).

Importing this package is cheap; modules that talk to Horizon import stellar-sdk.
"""
