"""Who is calling: API keys (built-in or the external Auth service) → Caller."""
