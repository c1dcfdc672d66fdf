"""What a run cost: an estimate that names its method and every input it used.

A child attempt costs its duration times the hourly rate of its step: the share of an instance
it could run on (vCPUs asked ÷ the type's vCPUs, or GPUs ÷ GPUs where it asks for GPUs, the larger)
times that type's price; or, with `--price vcpu=…,gpu=…`, its vCPUs and GPUs at the prices
given. The rates come from the backend (opsctl/backends/aws/prices.py for AWS); this module only
adds up. Storage requests are counted by the run itself and priced at S3 Standard's request
prices (opsctl_contract.storage.PRICE_PER_1000).

It is an estimate, and says so: Batch may place a child on a dearer type than the cheapest one
that fits, idle capacity between children is not counted, and data transfer and EBS are left out.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from opsctl_contract.errors import BadInput
from opsctl_contract.storage import PRICE_PER_1000, request_cost

if TYPE_CHECKING:
    from opsctl.records import AttemptRecord

CAVEATS = (
    "an estimate: each child attempt's duration x its share of the cheapest instance type of its "
    "compute environment that fits it; Batch may have used a dearer type, and idle capacity, EBS "
    "and data transfer are not counted"
)


@dataclass(frozen=True)
class Rate:
    """The hourly price of one child of a step, and where the figure came from."""

    dollars_per_hour: float
    basis: str  # one line a user can check against the price list
    instance_type: str | None = None
    market: str | None = None  # "spot", "on-demand" or "by hand"
    instance_price: float | None = None  # $/h of the whole instance
    share: float | None = None


@dataclass(frozen=True)
class HandPrices:
    """`--price vcpu=0.04,gpu=0.9`: dollars per vCPU-hour and per GPU-hour."""

    vcpu: float
    gpu: float

    def rate(self, vcpus: float, gpus: float) -> Rate:
        dollars = vcpus * self.vcpu + gpus * self.gpu
        basis = f"by hand: {vcpus:g} vCPU x ${self.vcpu:g}/h"
        if gpus:
            basis += f" + {gpus:g} GPU x ${self.gpu:g}/h"
        return Rate(round(dollars, 6), basis, market="by hand")


def parse_prices(text: str) -> HandPrices:
    """`vcpu=0.04,gpu=0.9` (either may be left out: 0); one line on anything else."""
    given: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("vcpu", "gpu"):
            raise BadInput(f"--price {text!r}: expected vcpu=DOLLARS,gpu=DOLLARS (per hour), got {part!r}")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not 0 <= price < 1000:
            raise BadInput(f"--price {text!r}: {name}={value!r} is not dollars per hour (0 to 1000)")
        given[name] = price
    return HandPrices(vcpu=given.get("vcpu", 0.0), gpu=given.get("gpu", 0.0))


def dollars(value: float | None) -> str:
    """A cost as the report and `watch` show it: cents from a dollar up, else 4 places."""
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


RateOf = Callable[[str, float, float], Rate]  # (queue, vCPUs, GPUs) -> Rate


def estimate(
    attempts: Sequence[AttemptRecord],
    queues: Mapping[str, str],
    rate_of: RateOf,
    requests: Mapping[str, Any] | None,
    now: float | None = None,
) -> dict[str, Any]:
    """Dollars by step and in total, with the rates used; an attempt still running counts up
    to `now`. `queues` maps each step to its queue; `requests` is the status document's count
    of the run's storage requests."""
    now = time.time() if now is None else now
    hours: dict[str, float] = defaultdict(float)
    dollars: dict[str, float] = defaultdict(float)
    rates: dict[tuple[str, float, float], Rate] = {}
    for a in attempts:
        if a["started"] is None:
            continue
        shape = (queues[a["step"]], float(a.get("vcpus") or 1), float(a.get("gpus") or 0))
        if shape not in rates:
            rates[shape] = rate_of(*shape)
        spent = max(0.0, ((a["finished"] or now) - a["started"]) / 3600)
        hours[a["step"]] += spent
        dollars[a["step"]] += spent * rates[shape].dollars_per_hour
    storage: dict[str, Any] | None = None
    storage_dollars = 0.0
    if requests is not None:
        counted = {k: int(requests.get(k, 0)) for k in PRICE_PER_1000}
        storage_dollars = request_cost(counted)
        storage = {
            "requests": counted,
            "dollars": round(storage_dollars, 6),
            "basis": "S3 Standard request prices: "
            + ", ".join(f"${p:g} per 1,000 {k.upper()}" for k, p in PRICE_PER_1000.items() if p),
        }
    compute = sum(dollars.values())
    return {
        "method": CAVEATS,
        "dollars": round(compute + storage_dollars, 6),
        "compute_dollars": round(compute, 6),
        "child_hours": round(sum(hours.values()), 6),
        "steps": {s: {"child_hours": round(hours[s], 6), "dollars": round(dollars[s], 6)} for s in hours},
        "rates": [
            {"queue": q, "vcpus": v, "gpus": g, **asdict(rate)} for (q, v, g), rate in sorted(rates.items())
        ],
        "storage": storage,
    }
