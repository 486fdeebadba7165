"""Per-provider lanes of the reconcile and expire jobs: each provider's payments are
claimed and worked on apart, at once, each lane with its own concurrency, so a
provider that fails, hangs or has a backlog never holds up another's payments."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from ..domain.enums import ProviderType
from .runner import BatchResult

log = structlog.get_logger("payments.jobs")

# Every provider a payment can have, enabled or not: a disabled provider's open
# payments are still claimed, and fail loudly, rather than being left alone unseen.
LANES = tuple(p for p in ProviderType if p != ProviderType.UNSPECIFIED)


async def by_provider(job: str, lane: Callable[[ProviderType], Awaitable[BatchResult]]) -> BatchResult:
    """Runs `lane` for every provider at once and adds up the results. A lane that raises
    (its claim failed) counts as one failure; the others' outcomes stand."""
    outcomes = await asyncio.gather(*(lane(provider) for provider in LANES), return_exceptions=True)
    total = BatchResult()
    for provider, outcome in zip(LANES, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome  # cancelled: stop as asked
            log.error("job_lane_failed", job=job, provider=provider.code, error=f"{type(outcome).__name__}: {outcome}",
                      exc_info=outcome)
            total.failed += 1
            continue
        if outcome.failed:
            log.warning("job_provider_failures", job=job, provider=provider.code, claimed=outcome.claimed,
                        failed=outcome.failed)
        add(total, outcome)
    return total


def add(total: BatchResult, result: BatchResult) -> BatchResult:
    total.claimed += result.claimed
    total.done += result.done
    total.failed += result.failed
    total.deferred += result.deferred
    total.not_started += result.not_started
    return total
