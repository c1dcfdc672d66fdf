"""The prices behind an AWS run's cost estimate: the only code that calls the Price List and EC2.

For a step's queue and a child's vCPUs and GPUs (opsctl.costs adds the hours up):

1. the queue's first compute environment (DescribeJobQueues, DescribeComputeEnvironments):
   its instance types or families, and whether it is SPOT or EC2 (on-demand);
2. the types those name (DescribeInstanceTypes, `instance-type` filter, `family.*` for a
   family; Batch's keywords `optimal`, `default_x86_64` and `default_arm64` as KEYWORDS
   expands them): their vCPUs and GPUs;
3. in each family, the smallest type the child fits on, priced: on-demand from the Price List
   (GetProducts, AmazonEC2, Linux, shared tenancy, no pre-installed software, in the stack's
   region), spot as the mean of EC2's spot price history (Linux/UNIX) over the run, every
   zone; a type with no spot history is priced on-demand, and the basis says so;
4. the child's rate: its share of the type (the larger of vCPUs and GPUs asked over the type's)
   times the type's price, the cheapest type winning.

Each answer is cached for the process: `watch` refreshes its estimate without asking again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any, cast

from opsctl.costs import Rate
from opsctl_contract.awsclient import aws_call, client
from opsctl_contract.errors import OpsctlError

if TYPE_CHECKING:
    from mypy_boto3_ec2.literals import InstanceTypeType


class NoPrice(OpsctlError):
    """A queue that cannot be priced (no instance type fits, the price list has no price, the
    queue or its capacity is not what a price needs): the report goes on without a cost, saying
    why. Its own type, so that a KeyError of a bug is not read as "no price"."""


# The Price List's API has endpoints in these regions only (botocore's endpoints.json).
PRICING_REGION = "us-east-1"
# The instance type keywords of a compute environment, each as the families it stands for, in
# order of preference: the first choice of which the region offers any type is the keyword's
# there. AWS Batch API Reference, "ComputeResource" (instanceTypes; also the User Guide,
# "Compute environment parameters", Instance types): `default_x86_64` is the m6i, c6i, r6i and
# c7i families, `default_arm64` m6g, c6g, r6g and c7g, and `optimal` is "semantically
# equivalent to default_x86_64" since November 2025. Before that `optimal` meant c4, m4 and r4
# where a region has them, else the region's lowest-cost generation, "most often c5, m5, r5"
# (AWS HPC Blog, "Introducing default instance categories for AWS Batch"), which is what it
# still means in a region without the current families.
X86_64 = ("m6i", "c6i", "r6i", "c7i")
KEYWORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "default_x86_64": (X86_64,),
    "default_arm64": (("m6g", "c6g", "r6g", "c7g"),),
    "optimal": (X86_64, ("c4", "m4", "r4"), ("c5", "m5", "r5")),
}


class Prices:
    """Rates for the steps of runs in one stack's region."""

    def __init__(self, region: str, batch: Any) -> None:
        self.region = region
        self.batch = batch
        self.ec2 = client("ec2", region)
        self.pricing = client("pricing", PRICING_REGION)
        self.calls: dict[str, int] = defaultdict(int)
        for service in (self.ec2, self.pricing):
            service.meta.events.register("before-call", self._count)
        self._environments: dict[str, tuple[str, list[str]]] = {}
        self._types: dict[tuple[str, ...], dict[str, tuple[int, int]]] = {}
        self._on_demand: dict[str, float | None] = {}
        self._spot: dict[str, tuple[float, int] | None] = {}

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def rate(self, queue: str, vcpus: float, gpus: float, since: float, until: float) -> Rate:
        """The hourly rate of a child asking `vcpus` and `gpus` in `queue`, spot prices taken
        over [since, until] (epoch seconds)."""
        market, names = self._environment(queue)
        types = self._instance_types(tuple(names))
        smallest: dict[str, tuple[int, int, str]] = {}
        for name, (v, g) in types.items():
            if v >= vcpus and g >= gpus:
                family = name.split(".")[0]
                smallest[family] = min(smallest.get(family, (v, g, name)), (v, g, name))
        if not smallest:
            raise NoPrice(f"no instance type of queue {queue} has {vcpus:g} vCPUs and {gpus:g} GPUs")
        best: Rate | None = None
        for v, g, name in sorted(smallest.values()):
            share = max(vcpus / v, gpus / g if g else 0.0)
            priced = self._price(name, market, since, until)
            if priced is None:
                continue
            price, bought, source = priced
            rate = Rate(
                dollars_per_hour=round(price * share, 6),
                basis=f"{name} ({v} vCPU, {g} GPU) {source}; share {share:.3g}",
                instance_type=name,
                market=bought,
                instance_price=price,
                share=round(share, 6),
            )
            if best is None or rate.dollars_per_hour < best.dollars_per_hour:
                best = rate
        if best is None:
            raise NoPrice(f"the price list has no Linux price in {self.region} for {', '.join(smallest)}")
        return best

    # --- the calls -------------------------------------------------------------------------

    def _environment(self, queue: str) -> tuple[str, list[str]]:
        if queue not in self._environments:
            with aws_call("AWS Batch", f"job queue {queue}", self.region):
                found = self.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
            if not found:
                raise NoPrice(f"job queue {queue} does not exist")
            order = sorted(found[0]["computeEnvironmentOrder"], key=lambda e: e["order"])
            with aws_call("AWS Batch", f"compute environments of {queue}", self.region):
                ces = self.batch.describe_compute_environments(
                    computeEnvironments=[order[0]["computeEnvironment"]]
                )["computeEnvironments"]
            resources = ces[0].get("computeResources", {}) if ces else {}
            if resources.get("type") not in ("SPOT", "EC2"):
                raise NoPrice(f"queue {queue}'s compute environment is not EC2 or SPOT capacity")
            self._environments[queue] = (resources["type"], list(resources.get("instanceTypes", [])))
        return self._environments[queue]

    def _instance_types(self, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        """vCPUs and GPUs of every type `names` allows in the region: one DescribeInstanceTypes
        (paged) for the types and families named and every family a keyword may stand for, then
        each keyword narrowed to the families it stands for there (`allowed`)."""
        if names not in self._types:
            families = [f for name in names for choice in KEYWORDS.get(name, ((name,),)) for f in choice]
            patterns = sorted({name if "." in name else f"{name}.*" for name in families})
            offered: dict[str, tuple[int, int]] = {}
            with aws_call("EC2", "instance types " + ", ".join(names), self.region):
                pages = self.ec2.get_paginator("describe_instance_types").paginate(
                    Filters=[{"Name": "instance-type", "Values": patterns}]
                )
                for page in pages:
                    for t in page["InstanceTypes"]:
                        gpus = sum(g.get("Count", 0) for g in (t.get("GpuInfo") or {}).get("Gpus", []))
                        offered[t["InstanceType"]] = (int(t["VCpuInfo"]["DefaultVCpus"]), gpus)
            wanted = allowed(names, {name.split(".")[0] for name in offered})
            self._types[names] = {
                name: shape
                for name, shape in offered.items()
                if name in wanted or name.split(".")[0] in wanted
            }
        return self._types[names]

    def _price(self, name: str, market: str, since: float, until: float) -> tuple[float, str, str] | None:
        """$/h of `name`, the market it was priced in, and where the figure came from."""
        if market == "SPOT":
            spot = self._spot_price(name, since, until)
            if spot is not None:
                mean, records = spot
                start = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
                source = f"spot ${mean:.4f}/h (mean of {records} prices, {self.region}, from {start})"
                return mean, "spot", source
        listed = self._on_demand_price(name)
        if listed is None:
            return None
        fallback = " (no spot price history)" if market == "SPOT" else ""
        return listed, "on-demand", f"on-demand ${listed:.4f}/h (price list, {self.region}){fallback}"

    def _on_demand_price(self, name: str) -> float | None:
        if name not in self._on_demand:
            terms = {
                "instanceType": name,
                "regionCode": self.region,
                "operatingSystem": "Linux",
                "tenancy": "Shared",
                "preInstalledSw": "NA",
                "capacitystatus": "Used",
                "marketoption": "OnDemand",
            }
            with aws_call("the AWS Price List", f"the price of {name}", PRICING_REGION):
                answer = self.pricing.get_products(
                    ServiceCode="AmazonEC2",
                    Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in terms.items()],
                    FormatVersion="aws_v1",
                    MaxResults=10,
                )
            self._on_demand[name] = _hourly_usd(answer.get("PriceList", []))
        return self._on_demand[name]

    def _spot_price(self, name: str, since: float, until: float) -> tuple[float, int] | None:
        if name not in self._spot:
            prices: list[float] = []
            with aws_call("EC2", f"the spot price history of {name}", self.region):
                pages = self.ec2.get_paginator("describe_spot_price_history").paginate(
                    InstanceTypes=[cast("InstanceTypeType", name)],  # the stubs' list is a snapshot
                    ProductDescriptions=["Linux/UNIX"],
                    StartTime=dt.datetime.fromtimestamp(since, dt.UTC),
                    EndTime=dt.datetime.fromtimestamp(max(since, until), dt.UTC),
                )
                for page in pages:
                    history = page["SpotPriceHistory"]
                    prices += [float(r["SpotPrice"]) for r in history if r["InstanceType"] == name]
            self._spot[name] = (sum(prices) / len(prices), len(prices)) if prices else None
        return self._spot[name]


def allowed(names: tuple[str, ...], offered: set[str]) -> set[str]:
    """The instance types and families a compute environment's `instanceTypes` allow, given the
    families the region `offered`: a keyword stands for its first choice of families the region
    has any of (KEYWORDS), a family or a type for itself."""
    found: set[str] = set()
    for name in names:
        choices = KEYWORDS.get(name)
        if choices is None:
            found.add(name)
        else:
            found.update(next((c for c in choices if offered.intersection(c)), ()))
    return found


def _hourly_usd(price_list: list[str]) -> float | None:
    """The hourly USD price in GetProducts' answer (API Reference, "GetProducts": PriceList is a
    list of JSON documents as strings; terms.OnDemand.<term>.priceDimensions.<rate>.pricePerUnit).
    Several products (a type's reservations, say) would be ambiguous: the dearest hourly one
    is taken, never a free one."""
    found = []
    for text in price_list:
        doc = json.loads(text)
        for term in doc.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0) or 0)
                if dimension.get("unit") == "Hrs" and usd > 0:
                    found.append(usd)
    return max(found) if found else None
