"""In-process CPU cost of the hot data paths, for A/B comparisons of src/ changes.

PaymentService (+ CallbackService for GetPayment) + repository + driver on a fresh
database, no transport: GetPayment (the payment and its latest delivery), a replay of a
create (same key), ListPayments (limit 20 of 2,000 rows), fresh creates (sandbox
provider answering at once), cancels of pending payments (a status change with its
event and callback row, and the cancel's audit row) and the sandbox's signed "paid"
webhooks for pending payments (verified, deduplicated, applied with its event and callback). Each operation runs `--ops` times at `--concurrency` in
flight on uvloop; the figure is this process' CPU time per operation (best of
`--repeat` runs), with the database server's CPU per operation over the same run
(every mariadbd / postgres process on the machine: other work using the database shows
up there) and the cores anything else used meanwhile (above ~0.3 the run was disturbed). On MariaDB, a separate pass counts round trips per operation by wrapping the
driver's command method (as bench/instrumented_serve.py does).

    .venv/bin/python bench/hotpath_ab.py [--backend mysql|postgresql|sqlite] [--ops 2000]

"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import base_env, new_database  # noqa: E402

from payments_svc.auth.caller import Caller  # noqa: E402
from payments_svc.config import load_settings  # noqa: E402
from payments_svc.container import build_container  # noqa: E402
from payments_svc.db.migrate import migrate  # noqa: E402
from payments_svc.domain.enums import PaymentStatus, ProviderType  # noqa: E402
from payments_svc.domain.payment import CreatePaymentCommand, ListPaymentsQuery, ProviderCallback  # noqa: E402
from payments_svc.service.callbacks import CallbackService  # noqa: E402

SHOP = Caller("shop")
_ids = itertools.count()


def command(request_id: str) -> CreatePaymentCommand:
    return CreatePaymentCommand(
        request_id=request_id, caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=0,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={"cart": "42"},
    )


def list_query() -> ListPaymentsQuery:
    return ListPaymentsQuery(limit=20)


SERVER_PROCESSES = {"mysql": {"mariadbd", "mysqld"}, "postgresql": {"postgres"}, "sqlite": set()}


def server_cpu_seconds(backend: str) -> float:
    """CPU time (user + system) of the database server's processes, from /proc."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm in SERVER_PROCESSES[backend]:
            total += int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every core spent on anything but idling, from /proc/stat."""
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    return (sum(cpu) - cpu[3] - cpu[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


async def run_ops(op, ops: int, concurrency: int, backend: str) -> tuple[float, float, float]:
    """CPU ms per operation over `ops` calls of `op()`, `concurrency` at a time: this
    process', the database server's; and the cores other work used meanwhile."""
    queue = iter(range(ops))

    async def worker():
        for _ in queue:
            await op()

    start, server_start, busy_start, wall = (time.process_time(), server_cpu_seconds(backend), machine_busy_seconds(),
                                             time.monotonic())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    own, server = time.process_time() - start, server_cpu_seconds(backend) - server_start
    other = (machine_busy_seconds() - busy_start - own - server) / (time.monotonic() - wall)
    return own * 1000 / ops, server * 1000 / ops, other


def count_round_trips():
    """Wraps asyncmy's command method; returns the Counter it fills."""
    import asyncmy.connection

    counter: collections.Counter = collections.Counter()
    original = asyncmy.connection.Connection._execute_command

    async def counted(self, command_code, sql):
        counter["round_trips"] += 1
        return await original(self, command_code, sql)

    asyncmy.connection.Connection._execute_command = counted
    return counter


async def main(args) -> dict:
    tmp = Path(tempfile.mkdtemp())
    database = new_database(args.backend, tmp)
    try:
        settings = load_settings(base_env(database.url, MYSQL_MAX_OPEN_CONNS=str(args.concurrency),
                                          PAYMENTS_GROUP_COMMIT_MAX=str(args.group_commit_max)), base_dir=tmp)
        container = build_container(settings)
        await migrate(container.db)
        service = container.service
        callbacks = CallbackService(service)
        first = (await service.create_payment(SHOP, command("fixed"))).payment
        # 2,000 rows to list; and with the fresh creates' rows, a pending payment for every cancel and webhook.
        for i in range(max(2000, min(200, args.ops) + args.ops * args.repeat)):
            await service.create_payment(SHOP, command(f"fill-{i}"))
        pending: list = []
        refill = asyncio.Lock()

        async def next_pending():
            """Each cancel or webhook its own pending payment (the creates' before it)."""
            async with refill:
                if not pending:
                    pending.extend(await service.list_payments(SHOP, ListPaymentsQuery(limit=100, status=PaymentStatus.PENDING)))
                return pending.pop()

        async def cancel():
            await service.cancel_payment(SHOP, (await next_pending()).id, "bench")

        sandbox = service.providers.get(ProviderType.SANDBOX)

        async def webhook():
            payment = await next_pending()
            body, signature = sandbox.build_event(payment, "pay")
            await service.handle_provider_callback(ProviderCallback(
                request_id="bench", provider="sandbox", callback_hash=payment.provider_callback_hash,
                signature=signature, payload=body))

        operations = {
            "GetPayment": lambda: callbacks.get_payment_with_delivery(SHOP, first.id),
            "replay": lambda: service.create_payment(SHOP, command("fixed")),
            "ListPayments (20)": lambda: service.list_payments(SHOP, list_query()),
            "fresh create": lambda: service.create_payment(SHOP, command(f"new-{next(_ids)}")),
            "cancel": cancel,
            "webhook (paid)": webhook,
        }
        results: dict = {}
        for name, op in operations.items():
            await run_ops(op, min(200, args.ops), args.concurrency, args.backend)  # warm-up
            runs = [await run_ops(op, args.ops, args.concurrency, args.backend) for _ in range(args.repeat)]
            results[name] = {"cpu_ms": round(min(r[0] for r in runs), 3), "runs": [round(r[0], 3) for r in runs],
                             "db_cpu_ms": round(min(r[1] for r in runs), 3),
                             "other_cores": [round(r[2], 2) for r in runs]}
        if args.backend == "mysql":
            counter = count_round_trips()
            for name, op in operations.items():
                counter.clear()
                for _ in range(50):
                    await op()
                results[name]["round_trips"] = counter["round_trips"] / 50
        await container.close()
        return results
    finally:
        database.drop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="mysql", choices=("mysql", "postgresql", "sqlite"))
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--group-commit-max", type=int, default=32, help="PAYMENTS_GROUP_COMMIT_MAX (1: group commit off)")
    args = parser.parse_args()
    out = uvloop.run(main(args))
    print(json.dumps({"backend": args.backend, **out}, indent=1))
    for name, r in out.items():
        if isinstance(r, dict):
            print(f"{name:20} {r['cpu_ms']:6.3f} ms CPU/op  runs {r['runs']}  database {r['db_cpu_ms']:6.3f} ms/op  "
                  f"round trips {r.get('round_trips', '-')}  other work (cores) {r['other_cores']}")
