"""The CloudFront distribution in front of the head: public HTTPS without a domain of your own.

Discord delivers interactions only to an HTTPS URL with a valid certificate. CloudFront gives one
(``https://dXXXX.cloudfront.net``) and forwards to the head's Elastic IP on the serve port over
plain HTTP, adding a secret header the ingress requires: requests that reach port 8000 any other
way are refused, so the front cannot be bypassed. Caching is off (every answer is per request),
every method passes, and every viewer header except Host reaches the origin, Discord's
``X-Signature-Ed25519`` and ``X-Signature-Timestamp`` included.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from serve_app.provisioning.stack.base import (
    ORIGIN_HEADER,
    SERVE_PORT,
    STACK_TAG,
    Delete,
    Family,
    Mark,
    ProvisioningError,
    Resolved,
)

# AWS's managed policies (fixed ids, the same in every account): no caching at all, and every
# viewer header, cookie and query string forwarded except Host (the origin is a different name).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_HEADER = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
# CloudFront waits this long for the origin's first byte: 60 s is the most without a quota
# request. A synchronous request that waits for a GPU cold start takes longer and gets a 504
# from CloudFront (the job still runs); use predictions (POST, then poll) for those.
ORIGIN_READ_TIMEOUT_S = 60
ORIGIN_ID = "raydiffusion-head"
# Disabling a distribution propagates to every edge before it can be deleted (minutes on AWS).
DISABLE_WAIT_S = 900.0


class Distribution(Family):
    def find(self) -> dict[str, Any] | None:
        """Our distribution (summary), found by its tag: CloudFront has no names."""
        cf = self.ctx.cloudfront
        marker: dict[str, Any] = {}
        while True:
            page = cf.list_distributions(**marker)["DistributionList"]
            for item in page.get("Items", []):
                tags = cf.list_tags_for_resource(Resource=item["ARN"])["Tags"].get("Items", [])
                if self.ctx.is_ours(tags):
                    return item
            if not page.get("IsTruncated"):
                return None
            marker = {"Marker": page["NextMarker"]}

    def _config(self, resolved: Resolved, caller_reference: str) -> dict[str, Any]:
        return {
            "CallerReference": caller_reference,
            "Comment": f"{STACK_TAG}={self.config.name}: HTTPS in front of the Ray head",
            "Enabled": True,
            "PriceClass": "PriceClass_100",
            "HttpVersion": "http2",
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": ORIGIN_ID,
                        "DomainName": resolved.address_dns,
                        "CustomHeaders": {
                            "Quantity": 1,
                            "Items": [{"HeaderName": ORIGIN_HEADER, "HeaderValue": resolved.origin_secret}],
                        },
                        "CustomOriginConfig": {
                            "HTTPPort": SERVE_PORT,
                            "HTTPSPort": 443,
                            "OriginProtocolPolicy": "http-only",
                            "OriginSslProtocols": {"Quantity": 1, "Items": ["TLSv1.2"]},
                            "OriginReadTimeout": ORIGIN_READ_TIMEOUT_S,
                            "OriginKeepaliveTimeout": 5,
                        },
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": ORIGIN_ID,
                "ViewerProtocolPolicy": "https-only",
                "AllowedMethods": {
                    "Quantity": 7,
                    "Items": ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"],
                    "CachedMethods": {"Quantity": 2, "Items": ["GET", "HEAD"]},
                },
                "CachePolicyId": CACHING_DISABLED,
                "OriginRequestPolicyId": ALL_VIEWER_EXCEPT_HOST_HEADER,
                "Compress": False,
            },
        }

    def ensure(self, resolved: Resolved) -> None:
        ctx, cf = self.ctx, self.ctx.cloudfront
        found = self.find()
        if found is None:
            ctx.say(
                "create",
                f"cloudfront distribution: https -> {resolved.address_dns or 'the head'}:{SERVE_PORT}",
            )
            if ctx.dry_run:
                return
            reference = f"{self.config.name}-{resolved.account}-{int(time.time())}"
            created = cf.create_distribution_with_tags(
                DistributionConfigWithTags={
                    "DistributionConfig": self._config(resolved, reference),
                    "Tags": {"Items": ctx.tags},
                }
            )["Distribution"]
            resolved.https_url = f"https://{created['DomainName']}"
            return
        current = cf.get_distribution_config(Id=found["Id"])
        wanted = self._config(resolved, current["DistributionConfig"]["CallerReference"])
        resolved.https_url = f"https://{found['DomainName']}"
        if _differs(wanted, current["DistributionConfig"]):
            ctx.say("update", f"cloudfront distribution {found['Id']} ({found['DomainName']})")
            if not ctx.dry_run:
                merged = {**current["DistributionConfig"], **wanted}
                cf.update_distribution(Id=found["Id"], IfMatch=current["ETag"], DistributionConfig=merged)
        else:
            ctx.say("exists", f"cloudfront distribution {found['Id']} ({found['DomainName']})")

    def status(self, mark: Mark) -> None:
        found = self.find()
        if found is None:
            mark("cloudfront distribution", "missing")
            return
        mark(f"cloudfront distribution {found['Id']} ({found['Status']})", "ours")

    def interactions_url(self) -> str | None:
        found = self.find()
        return None if found is None else f"https://{found['DomainName']}/discord/interactions"

    def teardown(self, delete: Delete, wait_s: float = DISABLE_WAIT_S) -> None:
        found = self.find()
        if found is None:
            return
        cf, ident = self.ctx.cloudfront, found["Id"]

        def disable_then_delete() -> None:
            current = cf.get_distribution_config(Id=ident)
            etag = current["ETag"]
            if current["DistributionConfig"]["Enabled"]:
                config = {**current["DistributionConfig"], "Enabled": False}
                etag = cf.update_distribution(Id=ident, IfMatch=etag, DistributionConfig=config)["ETag"]
                self.ctx.say("disabled", f"cloudfront distribution {ident}; waiting for it to deploy")
            deadline = time.monotonic() + wait_s
            pause = 1.0
            while cf.get_distribution(Id=ident)["Distribution"]["Status"] != "Deployed":
                if time.monotonic() > deadline:
                    raise ProvisioningError(
                        f"cloudfront distribution {ident} is still deploying its disabled state: "
                        "run teardown again in a few minutes"
                    )
                time.sleep(pause)  # polling AWS's propagation (minutes on AWS), backing off to 20 s
                pause = min(pause * 2, 20.0)
            try:
                cf.delete_distribution(Id=ident, IfMatch=cf.get_distribution(Id=ident)["ETag"])
            except ClientError as error:
                raise ProvisioningError(f"cloudfront distribution {ident}: {error}") from error

        delete(f"cloudfront distribution {ident} ({found['DomainName']})", disable_then_delete)


def _differs(wanted: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether any field we set differs (CloudFront fills in many we do not)."""
    for key, value in wanted.items():
        if key == "CallerReference":
            continue
        if isinstance(value, dict):
            if not isinstance(current.get(key), dict) or _differs(value, current[key]):
                return True
        elif (
            isinstance(value, list) and isinstance(current.get(key), list) and len(value) == len(current[key])
        ):
            for mine, theirs in zip(value, current[key], strict=True):
                if isinstance(mine, dict) and isinstance(theirs, dict):
                    if _differs(mine, theirs):
                        return True
                elif mine != theirs:
                    return True
        elif current.get(key) != value:
            return True
    return False
