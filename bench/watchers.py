#!/usr/bin/env python3
"""`make bench` scenario: watcher fan-out. 1,000 WatchPayment streams held open on one
`serve` process (MariaDB), each on a payment of its own, while nothing changes: the CPU
the server and MariaDB use then, against the same server with no watcher, and the
queries the tail sends. Then 20 payments are paid one after another and the time from
the commit (the webhook's answer) to the watcher's update is measured.

Writes bench/results/<date>-watchers.json and the WATCHERS block of bench/README.md.
Usage: bench/watchers.py [--watchers 1000] [--idle-seconds 30]"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import time
import uuid

import grpc
from live_common import RESULTS, cli, cpu_seconds, env_for, fresh_database, log, mariadb_pid, serve, sql, write_block

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc
from payments_svc.providers.sandbox.provider import sign

SECRET = "whsec_bench_watchers"
CHANNELS = 8  # HTTP/2 connections the watchers are spread over (100+ streams each)


def metadata(key: str):
    return (("x-request-id", uuid.uuid4().hex), ("x-api-key", key))


async def create_payments(stubs, key: str, count: int) -> list[pb.Payment]:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> pb.Payment:
        async with gate:
            reply = await stubs[i % len(stubs)].CreatePayment(pb.CreatePaymentRequest(
                request_id=f"w-{i}", caller_service="bench", resource_type="order", resource_id=str(i), amount_cents=1000,
                currency="usd", payment_method=1, payment_type=1, provider=100,
                status_callback_url="https://shop.internal/cb"), metadata=metadata(key), timeout=60)
            return reply.payment

    return await asyncio.gather(*(one(i) for i in range(count)))


async def pay(stub, key: str, payment: pb.Payment) -> None:
    body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "payment.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": payment.provider_payment_id, "amount": payment.amount_cents}}})
    await stub.HandleProviderCallback(pb.HandleProviderCallbackRequest(
        request_id=uuid.uuid4().hex, provider="sandbox", callback_hash=payment.provider_callback_hash,
        signature=sign(body.encode(), SECRET), payload=body), metadata=metadata(key), timeout=30)


def com_select(database: str) -> int:
    return int(sql("SHOW GLOBAL STATUS LIKE 'Com_select'", database=database)[0][1])


def sample(server_pid: int, db_pid: int | None, database: str, seconds: float) -> dict:
    wall0, cpu0, db0, q0 = time.monotonic(), cpu_seconds(server_pid), cpu_seconds(db_pid) if db_pid else 0.0, com_select(database)
    time.sleep(seconds)
    wall = time.monotonic() - wall0
    return {"seconds": round(wall, 2), "serve_cores": round((cpu_seconds(server_pid) - cpu0) / wall, 4),
            "mariadb_cores": round(((cpu_seconds(db_pid) if db_pid else 0.0) - db0) / wall, 4),
            "selects_per_s_all_databases": round((com_select(database) - q0) / wall, 1)}


async def run(args) -> dict:
    with fresh_database("payments_bench_watch") as (database, url):
        env = env_for(url, PAYMENTS_SANDBOX_WEBHOOK_SECRET=SECRET)
        cli(env, "db", "migrate")
        key = cli(env, "keys", "create", "--service", "bench").strip().splitlines()[-1]
        with serve(env) as (proc, _http, target):
            channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
            stubs = [payments_pb2_grpc.PaymentsServiceStub(c) for c in channels]
            log(f"creating {args.watchers} payments")
            payments = await create_payments(stubs, key, args.watchers)
            db_pid = mariadb_pid()
            await asyncio.sleep(2)
            log(f"no watcher: sampling {args.idle_seconds:g} s")
            idle = await asyncio.to_thread(sample, proc.pid, db_pid, database, args.idle_seconds)

            arrivals: dict[int, float] = {}
            opened = asyncio.Event()
            ready = 0

            async def watcher(i: int, payment: pb.Payment) -> None:
                nonlocal ready
                stream = stubs[i % CHANNELS].WatchPayment(pb.WatchPaymentRequest(id=payment.id), metadata=metadata(key))
                async for update in stream:
                    if update.HasField("event"):
                        arrivals[payment.id] = time.monotonic()
                        return
                    if update.HasField("payment"):
                        ready += 1
                        if ready == len(payments):
                            opened.set()

            log(f"opening {len(payments)} WatchPayment streams")
            started = time.monotonic()
            tasks = [asyncio.create_task(watcher(i, p)) for i, p in enumerate(payments)]
            await asyncio.wait_for(opened.wait(), 120)
            open_seconds = time.monotonic() - started
            await asyncio.sleep(2)
            log(f"{len(payments)} idle watchers: sampling {args.idle_seconds:g} s")
            watched = await asyncio.to_thread(sample, proc.pid, db_pid, database, args.idle_seconds)

            latencies = []
            for payment in payments[: args.changes]:
                # At a random point of the tail's interval: right after an arrival is right after a read.
                await asyncio.sleep(random.uniform(0, 0.25))
                committed = time.monotonic()
                await pay(stubs[0], key, payment)
                async with asyncio.timeout(10):
                    while payment.id not in arrivals:
                        await asyncio.sleep(0.005)
                latencies.append(max(0.0, arrivals[payment.id] - committed))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in channels:
                await channel.close()
    latencies.sort()
    return {
        "date": dt.date.today().isoformat(),
        "watchers": len(payments),
        "settings": {"PAYMENTS_WATCH_POLL_INTERVAL_SECONDS": 0.25, "PAYMENTS_WATCH_KEEPALIVE_SECONDS": 15},
        "open_all_seconds": round(open_seconds, 2),
        "no_watchers": idle,
        "idle_watchers": watched,
        "change_to_watcher_ms": {"count": len(latencies), "p50": round(statistics.median(latencies) * 1000, 1),
                                 "max": round(latencies[-1] * 1000, 1)},
    }


def render(report: dict) -> str:
    idle, watched, lat = report["no_watchers"], report["idle_watchers"], report["change_to_watcher_ms"]
    return "\n".join([
        f"Watcher fan-out ({report['date']}, `bench/watchers.py`): {report['watchers']:,} WatchPayment streams on one "
        f"`serve` process (MariaDB), one payment each, nothing changing, {watched['seconds']:g} s sampled.",
        "",
        "| | serve CPU (cores) | MariaDB CPU (cores) | SELECTs/s (server-wide) |",
        "|---|---|---|---|",
        f"| no watcher | {idle['serve_cores']:.3f} | {idle['mariadb_cores']:.3f} | {idle['selects_per_s_all_databases']:g} |",
        f"| {report['watchers']:,} idle watchers | {watched['serve_cores']:.3f} | {watched['mariadb_cores']:.3f} | "
        f"{watched['selects_per_s_all_databases']:g} |",
        "",
        f"Opening all of them took {report['open_all_seconds']:g} s. A payment paid while watched: its update reached "
        f"the watcher {lat['p50']:g} ms (p50) / {lat['max']:g} ms (max) after the webhook was answered "
        f"({lat['count']} changes; the tail reads every 0.25 s).",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{report['date']}-watchers.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    text = render(report)
    if not args.no_readme:
        write_block("WATCHERS", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
