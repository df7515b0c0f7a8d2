"""The S3 bucket: weights (read-only to nodes), and the image store's images and job records."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from serve_app.provisioning.stack.base import Delete, Family, Mark, ProvisioningError


class Bucket(Family):
    def ensure(self) -> None:
        ctx, bucket = self.ctx, self.config.bucket
        try:
            ctx.s3.head_bucket(Bucket=bucket)
            exists = True
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in {"403", "AccessDenied"}:
                raise ProvisioningError(f"bucket {bucket} exists but belongs to another account") from error
            exists = False
        if exists:
            ctx.say("exists", f"s3 bucket {bucket}{'' if self.is_ours() else ' (yours: kept on teardown)'}")
        else:
            ctx.say("create", f"s3 bucket {bucket}")
            if not ctx.dry_run:
                kwargs: dict[str, Any] = {"Bucket": bucket}
                if self.config.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
                ctx.s3.create_bucket(**kwargs)
                ctx.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": ctx.tags})
        ctx.say("ensure", f"s3 bucket {bucket}: all public access blocked")
        if not ctx.dry_run:
            ctx.s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
        ctx.say(
            "prefixes",
            f"s3://{bucket}/{self.config.weights_prefix} (weights, read-only to nodes), "
            f"s3://{bucket}/{self.config.store_prefix} (images/ and job records)",
        )

    def is_ours(self) -> bool:
        try:
            tags = self.ctx.s3.get_bucket_tagging(Bucket=self.config.bucket)["TagSet"]
        except ClientError:
            return False
        return self.ctx.is_ours(tags)

    def status(self, mark: Mark) -> None:
        bucket = self.config.bucket
        try:
            self.ctx.s3.head_bucket(Bucket=bucket)
            mark(f"s3 bucket {bucket}", "ours" if self.is_ours() else "not ours")
        except ClientError:
            mark(f"s3 bucket {bucket}", "missing")

    def teardown_bucket(self, delete: Delete, empty_bucket: bool) -> None:
        ctx, bucket = self.ctx, self.config.bucket
        if not self.is_ours():
            return
        keys = self._keys()
        if keys and not empty_bucket:
            ctx.say(
                "kept",
                f"s3 bucket {bucket}: it holds {len(keys)} objects (weights, images): "
                "pass --empty-bucket to delete them and the bucket",
            )
            return

        def drop_bucket() -> None:
            for start in range(0, len(keys), 1000):
                ctx.s3.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]]},
                )
            ctx.s3.delete_bucket(Bucket=bucket)

        delete(f"s3 bucket {bucket} ({len(keys)} objects)", drop_bucket)

    def _keys(self) -> list[str]:
        keys: list[str] = []
        for page in self.ctx.s3.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys
