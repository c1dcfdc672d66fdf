"""The cost estimate: rates from a stack's compute environments, EC2 and the price list, and the
sums opsctl.costs makes of them.

Batch's compute environments and EC2's instance types and spot price history are moto's (its
instance type data is AWS's own); the price list, which moto lacks, is played by
tests/price_list.py in the shape of its API Reference.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from opsctl.backends.aws.backend import AwsBackend
from opsctl.backends.aws.prices import NoPrice, Prices
from opsctl.costs import Rate, estimate, parse_prices
from opsctl.infra import load_outputs
from opsctl_contract.errors import BadInput
from tests.helpers import environ_set
from tests.price_list import PriceList, product, serving

REGION = "us-east-1"
LISTED = [
    product("g5.xlarge", REGION, 1.006, 4, 1),
    product("g5.2xlarge", REGION, 1.212, 8, 1),
    product("g5.12xlarge", REGION, 5.672, 48, 4),
    product("g5.xlarge", "eu-west-1", 1.123, 4, 1),  # another region's: never chosen
]


@pytest.fixture
def price_list() -> Iterator[PriceList]:
    played = PriceList(LISTED)
    with serving(played) as url, environ_set("AWS_ENDPOINT_URL_PRICING", url):
        yield played


@pytest.fixture
def prices(batch_env: dict[str, str], price_list: PriceList) -> Prices:
    """Prices for the moto stack's queues, the price list played."""
    return Prices(REGION, boto3.client("batch"))


def hour() -> tuple[float, float]:
    """The last hour, as a run's window."""
    return time.time() - 3600, time.time()


def chosen(rate: Rate) -> tuple[str | None, str | None, float | None, float | None]:
    return rate.instance_type, rate.market, rate.instance_price, rate.share


def test_an_on_demand_queue_is_priced_from_the_price_list(
    batch_env: dict[str, str], price_list: PriceList, prices: Prices
) -> None:
    gpu = prices.rate(batch_env["gpu_queue"], 4, 1, *hour())
    assert chosen(gpu) == ("g5.xlarge", "on-demand", 1.006, 1.0)
    assert gpu.dollars_per_hour == 1.006
    assert gpu.basis == "g5.xlarge (4 vCPU, 1 GPU) on-demand $1.0060/h (price list, us-east-1); share 1"
    # Too big for a g5.xlarge: the next size that fits, at its price.
    assert prices.rate(batch_env["gpu_queue"], 8, 1, *hour()).instance_type == "g5.2xlarge"
    # A quarter of the GPU type's vCPUs and none of its GPUs: a quarter of its price.
    quarter = prices.rate(batch_env["gpu_queue"], 1, 0, *hour())
    assert (quarter.instance_type, quarter.share, quarter.dollars_per_hour) == ("g5.xlarge", 0.25, 0.2515)
    [asked, *_] = price_list.requests
    terms = {f["Field"]: f["Value"] for f in asked["Filters"]}
    assert asked["ServiceCode"] == "AmazonEC2"
    assert terms == {
        "instanceType": "g5.xlarge",
        "regionCode": REGION,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "marketoption": "OnDemand",
    }
    # Each answer is kept: the queue, its environment, its types and each type's price once.
    assert prices.calls == {"DescribeInstanceTypes": 1, "GetProducts": 2}
    assert len(price_list.requests) == 2


def test_a_spot_queue_is_priced_from_the_spot_price_history(
    batch_env: dict[str, str], price_list: PriceList, prices: Prices
) -> None:
    """moto answers the history with one price per zone offering the type ($0.00001)."""
    cpu = prices.rate(batch_env["cpu_queue"], 1, 0, *hour())
    assert chosen(cpu) == ("c5.large", "spot", 0.00001, 0.5)
    assert cpu.basis.startswith("c5.large (2 vCPU, 0 GPU) spot $0.0000/h (mean of ")
    assert prices.calls["DescribeSpotPriceHistory"] == 1 and price_list.requests == []


def test_a_queue_that_cannot_be_priced_says_why(
    batch_env: dict[str, str], price_list: PriceList, prices: Prices
) -> None:
    with pytest.raises(NoPrice, match=r"^no instance type of queue .* has 4 vCPUs and 9 GPUs$"):
        prices.rate(batch_env["gpu_queue"], 4, 9, *hour())
    price_list.products = []  # a region the list has no price for
    with pytest.raises(NoPrice, match="the price list has no Linux price in us-east-1 for g5"):
        prices.rate(batch_env["gpu_queue"], 4, 1, *hour())


def test_the_estimate_adds_each_attempt_at_its_steps_rate() -> None:
    by_hand = parse_prices("vcpu=0.04,gpu=0.9")
    attempts = [
        {"step": "a", "started": 0.0, "finished": 1800.0, "vcpus": 2, "gpus": 0},
        {"step": "a", "started": 0.0, "finished": 3600.0, "vcpus": 2, "gpus": 0},
        {"step": "b", "started": 100.0, "finished": None, "vcpus": 4, "gpus": 1},  # running: to now
        {"step": "b", "started": None, "finished": None, "vcpus": 4, "gpus": 1},  # never started
    ]
    cost = estimate(
        attempts,
        {"a": "cpu", "b": "gpu"},
        lambda _q, v, g: by_hand.rate(v, g),
        {"put": 2000, "get": 10000},
        now=3700.0,
    )
    assert cost["steps"] == {
        "a": {"child_hours": 1.5, "dollars": 0.12},
        "b": {"child_hours": 1.0, "dollars": 1.06},
    }
    assert cost["storage"]["dollars"] == 0.014  # 2 x $0.005 + 10 x $0.0004
    assert cost["dollars"] == round(0.12 + 1.06 + 0.014, 6)
    assert [r["basis"] for r in cost["rates"]] == [
        "by hand: 2 vCPU x $0.04/h",
        "by hand: 4 vCPU x $0.04/h + 1 GPU x $0.9/h",
    ]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0.04", "expected vcpu=DOLLARS,gpu=DOLLARS (per hour), got '0.04'"),
        ("vcpu=0.04,ram=1", "got 'ram=1'"),
        ("vcpu=cheap", "vcpu='cheap' is not dollars per hour (0 to 1000)"),
        ("gpu=-1", "gpu='-1' is not dollars per hour"),
        ("vcpu=nan", "vcpu='nan' is not dollars per hour"),
        ("vcpu=1e9", "vcpu='1e9' is not dollars per hour"),
    ],
)
def test_a_bad_price_is_one_line(text: str, why: str) -> None:
    with pytest.raises(BadInput, match=r"^--price ") as caught:
        parse_prices(text)
    assert why in str(caught.value) and "\n" not in str(caught.value)


def a_queue_of(instance_types: list[str]) -> str:
    """A new on-demand queue on moto whose one compute environment allows `instance_types`,
    made like the stack's (subnets, security group, roles)."""
    import uuid

    batch = boto3.client("batch")
    stack = batch.describe_compute_environments(computeEnvironments=["opsctl-test-gpu"])[
        "computeEnvironments"
    ][0]
    resources = stack["computeResources"]
    name = f"opsctl-test-{uuid.uuid4().hex[:8]}"
    environment = batch.create_compute_environment(
        computeEnvironmentName=name,
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 64,
            "instanceTypes": instance_types,
            "subnets": resources["subnets"],
            "securityGroupIds": resources["securityGroupIds"],
            "instanceRole": resources["instanceRole"],
        },
        serviceRole=stack["serviceRole"],
    )["computeEnvironmentArn"]
    return str(
        batch.create_job_queue(
            jobQueueName=name,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
        )["jobQueueArn"]
    )


def test_optimal_is_priced_as_the_families_it_stands_for_now(
    batch_env: dict[str, str], price_list: PriceList, prices: Prices
) -> None:
    """`optimal` means default_x86_64 (m6i, c6i, r6i, c7i) since November 2025: the older
    c4 and c5, cheaper here, are not what Batch launches for it any more."""
    price_list.products = [
        product("c4.large", REGION, 0.050, 2, 0),
        product("c5.large", REGION, 0.060, 2, 0),
        product("c6i.large", REGION, 0.085, 2, 0),
        product("c7i.large", REGION, 0.089, 2, 0),
        product("m6i.large", REGION, 0.096, 2, 0),
        product("r6i.large", REGION, 0.126, 2, 0),
    ]
    rate = prices.rate(a_queue_of(["optimal"]), 1, 0, *hour())
    assert chosen(rate) == ("c6i.large", "on-demand", 0.085, 0.5)
    asked = sorted(
        {f["Value"] for r in price_list.requests for f in r["Filters"] if f["Field"] == "instanceType"}
    )
    assert asked == ["c6i.large", "c7i.large", "m6i.large", "r6i.large"], "the smallest of each family"


def test_the_instance_type_keywords_stand_for_their_families(
    batch_env: dict[str, str], prices: Prices
) -> None:
    """As EC2 lists the types (moto's data is AWS's): each keyword's families only."""
    for keyword, families in (
        ("default_x86_64", {"m6i", "c6i", "r6i", "c7i"}),
        ("default_arm64", {"m6g", "c6g", "r6g", "c7g"}),
        ("optimal", {"m6i", "c6i", "r6i", "c7i"}),
    ):
        types = prices._instance_types((keyword,))
        assert {name.split(".")[0] for name in types} == families, keyword
    assert {name.split(".")[0] for name in prices._instance_types(("optimal", "g5.xlarge"))} == {
        "m6i",
        "c6i",
        "r6i",
        "c7i",
        "g5",
    }


def test_optimal_in_a_region_without_the_current_families() -> None:
    """Where a region offers none of default_x86_64's families, `optimal` keeps its older
    meaning: c4, m4 and r4 where the region has them, else c5, m5 and r5."""
    from opsctl.backends.aws.prices import allowed

    assert allowed(("optimal",), {"c4", "m4", "r4", "c5", "m5", "r5", "m6i", "c6i"}) == {
        "m6i",
        "c6i",
        "r6i",
        "c7i",
    }
    assert allowed(("optimal",), {"c4", "m4", "r4", "c5", "m5", "r5"}) == {"c4", "m4", "r4"}
    assert allowed(("optimal",), {"c5", "m5", "r5", "g5"}) == {"c5", "m5", "r5"}
    assert allowed(("default_arm64", "p3.2xlarge", "c5"), {"c6g"}) == {
        "m6g",
        "c6g",
        "r6g",
        "c7g",
        "p3.2xlarge",
        "c5",
    }


def test_a_bug_in_pricing_is_not_read_as_no_price(
    infra_file: Path, price_list: PriceList, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's cost says "unavailable" for a queue that cannot be priced (NoPrice, an AWS
    refusal), and nothing else: a KeyError from a bug in prices.py surfaces, not as a price
    missing. The bug is played by making Prices.rate raise one."""
    backend = AwsBackend(load_outputs(infra_file))
    doc = {"steps": [{"name": "s", "queue": "cpu", "commands": {"done": 1}}], "requests": None}
    attempts = [
        {"step": "s", "index": 0, "generation": 1, "attempt": 1, "started": 1.0, "finished": 61.0}
        | {"exit_code": 0, "reason": None, "cpu_seconds": None, "vcpus": 1.0, "gpus": 0.0}
    ]

    def no_price(*_: object) -> Rate:
        raise NoPrice("the price list has no Linux price in us-east-1 for c5")

    monkeypatch.setattr(Prices, "rate", no_price)
    cost = backend.cost("r", doc, attempts, None)
    assert cost["dollars"] is None and cost["unavailable"].startswith("the price list has no Linux price")

    def bug(*_: object) -> Rate:
        return {}["instanceTypes"]  # type: ignore[no-any-return]

    monkeypatch.setattr(Prices, "rate", bug)
    with pytest.raises(KeyError):
        backend.cost("r", doc, attempts, None)
