"""Stripe, through the official SDK: the provider (Checkout Sessions, Payment Links,
refunds), what its webhook events mean, amounts in Stripe's units, and the STRIPE_*
settings.

Importing this package is cheap; only provider.py imports the Stripe SDK.
"""
