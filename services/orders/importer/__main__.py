"""python -m services.orders.importer {shopify|woocommerce} EXPORT.csv — import a shop's history (docs/orders.md)."""

import argparse
import asyncio
import os
import sys
from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from aio_pika.exceptions import AMQPConnectionError

from services.orders.importer.exports import NotThisExport, UnreadableOrder, read_customer_ids
from services.orders.importer.run import (
    Checkpoint,
    ImportStopped,
    MissingQueues,
    OrdersApi,
    Progress,
    WrongCheckpoint,
    check_queues,
    default_state_path,
    fingerprint,
    import_history,
)
from shared.outbox import EventPublisher
from shared.settings import ServiceSettings

SERVICES = ("orders", "followups", "loyalty", "referrals")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.orders.importer",
        description="Publish a shop's order history (an order export CSV) as events marked imported. "
        "RABBITMQ_URL and CRM_PREFIX say where, as for the services.",
    )
    parser.add_argument("platform", choices=("shopify", "woocommerce"), help="whose export the file is")
    parser.add_argument("export", type=Path, help="the order export CSV")
    parser.add_argument(
        "--customers",
        type=Path,
        help="Shopify only: the customers export CSV (Customer ID, Email), so history joins each customer's "
        "account id; without it a customer is known by e-mail (guest:<e-mail>)",
    )
    parser.add_argument(
        "--timezone",
        default="UTC",
        help="the shop's time zone, for times written without an offset (WooCommerce), e.g. Europe/Bratislava",
    )
    parser.add_argument(
        "--placed-before",
        metavar="WHEN",
        help="when the shop's webhooks were connected, if before the export was taken (2026-11-28T10:00:00+01:00, "
        "or a day, midnight in --timezone): orders placed since are left to the webhooks, which told them",
    )
    parser.add_argument(
        "--orders-url",
        metavar="URL",
        help="the orders API (e.g. http://127.0.0.1:8001), when the webhooks were connected before the import: "
        "each refunded order's history refund is published less what the webhooks told of it "
        "(RAPPORT_API_KEY, else ADMIN_API_KEY: a key that may read)",
    )
    parser.add_argument(
        "--state", type=Path, help="the checkpoint file (default: next to the export, <export>.import-state.json)"
    )
    parser.add_argument("--restart", action="store_true", help="forget the checkpoint and publish everything again")
    parser.add_argument(
        "--window", type=int, default=500, help="events per confirmed window (the checkpoint moves per window)"
    )
    parser.add_argument(
        "--services",
        default=",".join(SERVICES),
        help="services whose queues must exist before importing, comma-separated (default: all four)",
    )
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    topology = settings.topology
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"--timezone: {args.timezone!r} is not a time zone (e.g. Europe/Bratislava, UTC)", file=sys.stderr)
        return 2
    placed_before = None
    if args.placed_before is not None:
        placed_before = moment_given(args.placed_before, zone)
        if placed_before is None:
            print(
                f"--placed-before: {args.placed_before!r} is not a date or time such as 2026-11-28T10:00",
                file=sys.stderr,
            )
            return 2
    if not args.export.is_file():
        print(f"{args.export}: no such file", file=sys.stderr)
        return 2
    customer_ids = None
    if args.customers is not None and args.platform != "shopify":
        print("--customers: WooCommerce's export names each order's customer already", file=sys.stderr)
        return 2
    if args.customers is not None:
        with args.customers.open(encoding="utf-8-sig", newline="") as file:
            customer_ids = read_customer_ids(file)
    state = args.state or default_state_path(args.export)
    if args.restart:
        state.unlink(missing_ok=True)
    checkpoint = Checkpoint.load(state, fingerprint(args.export))
    await check_queues(settings.rabbitmq_url, topology, [s for s in args.services.split(",") if s])
    key = os.environ.get("RAPPORT_API_KEY") or (
        settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    )
    if args.orders_url is not None and not key:
        print("--orders-url: set RAPPORT_API_KEY (or ADMIN_API_KEY) to a key of the services", file=sys.stderr)
        return 2
    publisher = EventPublisher(settings.rabbitmq_url, topology.events.name, name="rapport-importer")
    await publisher.start()
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)
    orders = OrdersApi(http, args.orders_url) if args.orders_url is not None else None
    try:
        report = await import_history(
            args.platform,
            args.export,
            publisher.publish,
            checkpoint,
            shop_timezone=zone,
            customer_ids=customer_ids,
            placed_before=placed_before,
            told_refunds=orders.told if orders is not None else None,
            window_events=args.window,
            progress=Progress(args.export.stat().st_size),
        )
    finally:
        await http.aclose()
        await publisher.stop()
    print(report.summary())
    print(f"  checkpoint        {state}")
    return 0


def moment_given(text: str, zone: tzinfo) -> datetime | None:
    """An ISO 8601 date or time; one without an offset is in the shop's zone (a day: its midnight)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def run(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(main(arguments(argv)))
    except (NotThisExport, UnreadableOrder, WrongCheckpoint, MissingQueues, ImportStopped) as error:
        print(f"\nimport stopped: {error}", file=sys.stderr)
        return 1
    except (OSError, AMQPConnectionError) as error:
        print(f"\nimport stopped: the broker cannot be reached ({error!r}); check RABBITMQ_URL", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\nimport interrupted: run the same command again to go on after the last confirmed window", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(run())
