"""Provider accounts per caller service: a caller's own credentials at Stripe or VNPay,
stored encrypted (AES-256-GCM, keys from PAYMENTS_ENCRYPTION_KEYS), used for its payments
instead of the default account from the environment.

encryption.py  the keys and the ciphertext format (bound to row and field)
credentials.py what an account holds per provider, checked before it is stored
repository.py  the provider_accounts table (ciphertexts only)
store.py       add, rotate, disable, reencrypt, list: encrypting and decrypting
resolver.py    the provider for a payment or a create, cached per process for a short TTL
commands.py    `payments-svc accounts ...`
"""
