"""Orchestration under failure: a circuit breaker per provider account (breaker.py,
guard.py), quotas per caller (quotas.py, limits.py) and the store they share across
processes (store.py: Redis when PAYMENTS_REDIS_URL is set, else each process its own)."""
