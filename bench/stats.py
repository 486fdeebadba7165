#!/usr/bin/env python3
"""`make bench` scenario: GetPaymentStats on a 1,000,000-row payments table (MariaDB).
Rows of 20 callers (50,000 each), 10,000 buyers, every status, three currencies,
created over a year; then the stats query of repository/stats.py, as the service sends
it, for one caller over 30 days and over a year, and for one buyer: its EXPLAIN and the
median of 5 timed runs.

Writes bench/results/<date>-stats.json and the STATS block of bench/README.md.
Usage: bench/stats.py [--rows 1000000]"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time

import pymysql
from live_common import MYSQL, RESULTS, cli, env_for, fresh_database, log, sql, write_block
from sqlalchemy.dialects import mysql

from payments_svc.repository.stats import stats_statement

CALLERS, BUYERS = 20, 10_000
NOW = dt.datetime(2026, 12, 1)


def fill(database: str, rows: int) -> float:
    """Inserts `rows` payments in one INSERT ... SELECT over MariaDB's sequence engine."""
    started = time.monotonic()
    sql(f"""
        INSERT INTO payments (request_id, caller_service, request_fingerprint, resource_type, resource_id, customer_ref,
            amount_cents, currency, status, payment_method, payment_type, provider, provider_callback_hash,
            provider_callback_url, status_callback_url, refunded_cents, refundable_cents, metadata_json,
            created_at, updated_at)
        SELECT CONCAT('r-', seq), CONCAT('caller-', LPAD(seq % {CALLERS}, 2, '0')), REPEAT('0', 64), 'order', seq,
            CONCAT('buyer-', seq % {BUYERS}), 100 + seq % 10000, ELT(1 + seq % 3, 'USD', 'EUR', 'VND'),
            ELT(1 + seq % 6, 2, 10, 10, 20, 30, 40), 1, 1, 100, CONCAT('h-', seq), 'https://x/cb', 'https://shop/cb',
            IF(seq % 6 = 2 AND seq % 5 = 0, 50, 0), 100 + seq % 10000, '{{}}',
            TIMESTAMPADD(SECOND, -(seq * 31536) % 31536000, '{NOW:%Y-%m-%d %H:%M:%S}'),
            TIMESTAMPADD(SECOND, -(seq * 31536) % 31536000, '{NOW:%Y-%m-%d %H:%M:%S}')
        FROM seq_1_to_{rows}""", database=database)
    sql("ANALYZE TABLE payments", database=database)
    return time.monotonic() - started


def statement_sql(caller: str, buyer: str, since: dt.datetime, until: dt.datetime) -> str:
    stmt = stats_statement(caller, buyer, since, until)
    return str(stmt.compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}))


def measure(database: str, query: str) -> dict:
    """On one connection (a connect per run would be timed too); the first run warms the buffer pool."""
    plan = sql("EXPLAIN " + query, database=database)
    timings, result = [], None
    conn = pymysql.connect(database=database, autocommit=True, **MYSQL)
    try:
        with conn.cursor() as cur:
            for _ in range(6):
                started = time.perf_counter()
                cur.execute(query)
                result = cur.fetchall()
                timings.append(time.perf_counter() - started)
    finally:
        conn.close()
    rows = sum(int(r[2]) for r in result)
    return {"median_ms": round(statistics.median(timings[1:]) * 1000, 2), "payments_counted": rows, "groups": len(result),
            "explain": [{"table": p[2], "type": p[3], "key": p[5], "rows": p[8], "extra": p[9]} for p in plan]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    with fresh_database("payments_bench_stats") as (database, url):
        cli(env_for(url), "db", "migrate")
        log(f"inserting {args.rows:,} payments")
        fill_seconds = fill(database, args.rows)
        (total,), = sql("SELECT COUNT(*) FROM payments", database=database)
        cases = {
            "one caller, 30 days": statement_sql("caller-07", "", NOW - dt.timedelta(days=30), NOW),
            "one caller, 365 days": statement_sql("caller-07", "", NOW - dt.timedelta(days=365), NOW),
            "one buyer of a caller, 365 days": statement_sql("caller-07", "buyer-4567", NOW - dt.timedelta(days=365), NOW),
        }
        results = {}
        for name, query in cases.items():
            log(name)
            results[name] = measure(database, query)
    report = {"date": dt.date.today().isoformat(), "rows": total, "fill_seconds": round(fill_seconds, 1),
              "queries": {name: {"sql": cases[name], **r} for name, r in results.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{report['date']}-stats.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"GetPaymentStats on {total:,} payments ({report['date']}, `bench/stats.py`; 20 callers, 10,000 buyers, "
             "a year of rows). Median of 5 runs of the service's statement; the plan is MariaDB's EXPLAIN.", "",
             "| query | payments counted | median | plan (key, type, rows examined est., extra) |", "|---|---|---|---|"]
    for name, r in results.items():
        plan = "; ".join(f"{p['key']}, {p['type']}, {p['rows']}, {p['extra']}" for p in r["explain"])
        lines.append(f"| {name} | {r['payments_counted']:,} | {r['median_ms']:g} ms | {plan} |")
    text = "\n".join(lines)
    if not args.no_readme:
        write_block("STATS", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
