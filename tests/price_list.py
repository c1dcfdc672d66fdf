"""The AWS Price List Query API, played by the test harness over HTTP on 127.0.0.1 (moto has no
`pricing` service): GetProducts only, answering from a table of hourly prices.

What it answers follows the API Reference ("AWS Price List Query API", "GetProducts": JSON 1.1,
`X-Amz-Target: AWSPriceListService.GetProducts`; `PriceList` is an array of strings, each one
product's JSON document) and the price list file format ("Reading the price list files":
`product.attributes`, `terms.OnDemand.<sku>.<offerTermCode>.priceDimensions.<rateCode>`,
`pricePerUnit.USD` a string, `unit` "Hrs"). Each filter is TERM_MATCH on an attribute; a
product is answered when every filter matches it. The prices are made up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def product(instance_type: str, region: str, usd: float, vcpus: int, gpus: int) -> dict[str, Any]:
    """One EC2 on-demand Linux product as the price list documents it."""
    sku = f"SKU{abs(hash((instance_type, region))) % 10**12:012d}"
    term = f"{sku}.JRTCKXETXF"
    rate = f"{term}.6YS6EN2CT7"
    attributes = {
        "instanceType": instance_type,
        "regionCode": region,
        "location": "US East (N. Virginia)",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "marketoption": "OnDemand",
        "licenseModel": "No License required",
        "vcpu": str(vcpus),
        "servicecode": "AmazonEC2",
        "usagetype": f"BoxUsage:{instance_type}",
    }
    if gpus:
        attributes["gpu"] = str(gpus)
    return {
        "product": {"productFamily": "Compute Instance", "sku": sku, "attributes": attributes},
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {
                term: {
                    "offerTermCode": "JRTCKXETXF",
                    "sku": sku,
                    "effectiveDate": "2026-11-01T00:00:00Z",
                    "termAttributes": {},
                    "priceDimensions": {
                        rate: {
                            "rateCode": rate,
                            "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                            "unit": "Hrs",
                            "beginRange": "0",
                            "endRange": "Inf",
                            "pricePerUnit": {"USD": f"{usd:.10f}"},
                            "appliesTo": [],
                        }
                    },
                }
            }
        },
        "version": "20261101000000",
        "publicationDate": "2026-11-01T00:00:00Z",
    }


class PriceList:
    """Products by the test; `requests` holds every GetProducts body received."""

    def __init__(self, products: list[dict[str, Any]]) -> None:
        self.products = products
        self.requests: list[dict[str, Any]] = []

    def get_products(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(body)
        wanted = [p for p in self.products if p["serviceCode"] == body.get("ServiceCode")]
        for f in body.get("Filters", []):
            assert f["Type"] == "TERM_MATCH", f
            wanted = [p for p in wanted if p["product"]["attributes"].get(f["Field"]) == f["Value"]]
        return {"FormatVersion": "aws_v1", "PriceList": [json.dumps(p) for p in wanted]}


@contextmanager
def serving(price_list: PriceList, record: Callable[[dict[str, Any]], None] | None = None) -> Iterator[str]:
    """The played API's endpoint URL while the block runs; `record` gets each call answered
    (the permission tests' recording, tests/iam/)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            if self.headers.get("X-Amz-Target") == "AWSPriceListService.GetProducts":
                status, answer = 200, price_list.get_products(body)
            else:
                status = 400
                answer = {"__type": "InvalidParameterException", "message": "unknown operation"}
            if record is not None:
                from tests.batch_player import signed_call

                operation = str(self.headers.get("X-Amz-Target", "")).rsplit(".", 1)[-1]
                record(signed_call("pricing", operation, body, self.headers, status, answer))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
