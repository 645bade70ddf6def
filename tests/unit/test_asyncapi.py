"""The AsyncAPI documents checked in under docs/ are the ones the services generate."""

from pathlib import Path

import pytest

from services.asyncapi import write_all

DOCS = Path(__file__).parents[2] / "docs" / "asyncapi"


def test_checked_in_asyncapi_documents_are_current(tmp_path: Path) -> None:
    for generated in write_all(tmp_path):
        checked_in = DOCS / generated.name
        assert checked_in.exists(), f"run `make asyncapi`: {checked_in} is missing"
        if checked_in.read_text() != generated.read_text():
            pytest.fail(f"run `make asyncapi`: {checked_in} is out of date")


def test_documents_describe_the_events_with_examples() -> None:
    loyalty = (DOCS / "loyalty.yaml").read_text()
    assert "crm.events:points.awarded" in loyalty
    assert "Points added." in loyalty  # a field description
    assert (
        "order.placed, order.refunded, order.cancelled, feedback.received, referral.converted, customer.erased"
        in loyalty
    )
