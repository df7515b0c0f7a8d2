"""Ray's AWS node provider, with spot launches that fall back to on-demand.

Ray 2.60's autoscaler v2 (what `ray up` runs) lowers a node type's availability only when an
instance it launched never came up (ALLOCATION_TIMEOUT). A RunInstances *error* (no spot
capacity, the spot quota, a missing AWSServiceRoleForEC2Spot) is ALLOCATION_FAILED, and node-type
`priority` keeps choosing the spot type: no GPU would ever arrive. Ray's provider already tries
every subnet (zone) before giving up, so a failure that reaches this class is a failure in all of
them; here the same launch is then made on-demand, and for ``spot_retry_after_s`` (provider config,
default 300) further launches of that type go straight to on-demand instead of failing first.
Each on-demand stand-in carries the tag ``raydiffusion:market=on-demand`` so it can be counted.

cluster.yaml selects it with ``provider: {type: external, module:
serve_app.provisioning.node_provider.SpotFallbackNodeProvider}``; everything else (bootstrap,
SSH, Docker, tags, termination) is Ray's AWS code, inherited unchanged.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

logger = logging.getLogger(__name__)

MARKET_TAG = "raydiffusion:market"
DEFAULT_SPOT_RETRY_AFTER_S = 300.0


def is_spot(node_config: dict[str, Any]) -> bool:
    return (node_config.get("InstanceMarketOptions") or {}).get("MarketType") == "spot"


def on_demand_config(node_config: dict[str, Any]) -> dict[str, Any]:
    """The same launch without the spot market option, tagged as a stand-in."""
    config = copy.deepcopy(node_config)
    config.pop("InstanceMarketOptions", None)
    specs = config.setdefault("TagSpecifications", [])
    instance_spec = next((s for s in specs if s.get("ResourceType") == "instance"), None)
    if instance_spec is None:
        instance_spec = {"ResourceType": "instance", "Tags": []}
        specs.append(instance_spec)
    instance_spec["Tags"] = [t for t in instance_spec.get("Tags", []) if t.get("Key") != MARKET_TAG]
    instance_spec["Tags"].append({"Key": MARKET_TAG, "Value": "on-demand"})
    return config


def failure_code(error: BaseException) -> str:
    """The EC2 error code of a failed launch (Ray wraps it in NodeLaunchException.category)."""
    category = getattr(error, "category", None)
    if category:
        return str(category)
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", type(error).__name__))
    return type(error).__name__


class SpotFallbackNodeProvider(AWSNodeProvider):
    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self._spot_retry_after_s = float(
            provider_config.get("spot_retry_after_s", DEFAULT_SPOT_RETRY_AFTER_S)
        )
        # instance type -> monotonic time until which spot is not tried again
        self._spot_unavailable_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int) -> dict[str, Any]:
        if not is_spot(node_config):
            return super().create_node(node_config, tags, count)
        instance_type = str(node_config.get("InstanceType"))
        with self._lock:
            skip_spot = time.monotonic() < self._spot_unavailable_until.get(instance_type, float("-inf"))
        if not skip_spot:
            try:
                return super().create_node(node_config, tags, count)
            except Exception as error:  # Ray raises NodeLaunchException (or the ClientError itself)
                code = failure_code(error)
                with self._lock:
                    self._spot_unavailable_until[instance_type] = time.monotonic() + self._spot_retry_after_s
                logger.warning(
                    "spot launch of %d x %s failed (%s); on-demand instead, and for the next %.0f s",
                    count,
                    instance_type,
                    code,
                    self._spot_retry_after_s,
                )
        return super().create_node(on_demand_config(node_config), tags, count)
