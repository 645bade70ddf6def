"""`make asyncapi`: write the AsyncAPI document of every service to docs/asyncapi/<service>.yaml."""

import sys
from pathlib import Path

import yaml
from faststream.specification import AsyncAPI

from services.followups.app import SPEC as FOLLOWUPS
from services.loyalty.app import SPEC as LOYALTY
from services.orders.app import SPEC as ORDERS
from services.referrals.app import SPEC as REFERRALS
from shared.service import ServiceSpec, build_runtime
from shared.settings import ServiceSettings

SPECS = (ORDERS, FOLLOWUPS, LOYALTY, REFERRALS)
# The documented defaults, whatever this shell's environment says.
DOCUMENTED = ServiceSettings(crm_prefix="crm", rabbitmq_url="amqp://localhost:5672/")


def asyncapi_document(spec: ServiceSpec) -> str:
    broker = build_runtime(spec, DOCUMENTED, documenting=True).broker
    document = AsyncAPI(
        broker,
        title=f"Rapport {spec.name}",
        version="1.0.0",
        description=f"Events the {spec.name} service consumes and publishes (contract version 1).",
    ).to_specification()
    # Sorted, so the checked-in document changes only when the contract does.
    written: str = yaml.safe_dump(document.to_jsonable(), sort_keys=True, allow_unicode=True, width=1000)
    return written


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in SPECS:
        path = folder / f"{spec.name}.yaml"
        path.write_text(asyncapi_document(spec))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/asyncapi")):
        print(path)
