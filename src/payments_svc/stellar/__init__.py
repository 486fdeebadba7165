"""The Stellar provider's ledger side: payment instructions, reading the receiving
account's payments feed from Horizon, and crediting payments from it.

Importing this package is cheap; modules that talk to Horizon import stellar-sdk.
"""
