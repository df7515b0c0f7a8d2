"""The ECR repository holding the image every node runs (immutable tags, scanned on push)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from serve_app.provisioning.stack.base import Delete, Family, Mark, Resolved


class Repository(Family):
    def ensure(self, resolved: Resolved) -> None:
        ctx, name = self.ctx, self.config.name
        try:
            repo = ctx.ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
            ctx.say("exists", f"ecr repository {name}")
        except ClientError as error:
            if error.response["Error"]["Code"] != "RepositoryNotFoundException":
                raise
            ctx.say("create", f"ecr repository {name} (immutable tags, scan on push)")
            if ctx.dry_run:
                registry = f"{resolved.account}.dkr.ecr.{self.config.region}.amazonaws.com"
                resolved.repository_arn = (
                    f"arn:{resolved.partition}:ecr:{self.config.region}:{resolved.account}:repository/{name}"
                )
                resolved.repository_uri = f"{registry}/{name}"
                return
            # Immutable tags: a tag names one image forever, so nodes launched on different days
            # from the same cluster.yaml run the same code.
            repo = ctx.ecr.create_repository(
                repositoryName=name,
                imageTagMutability="IMMUTABLE",
                imageScanningConfiguration={"scanOnPush": True},
                tags=ctx.tags,
            )["repository"]
        resolved.repository_arn = repo["repositoryArn"]
        resolved.repository_uri = repo["repositoryUri"]

    def _tags(self) -> list[dict[str, str]] | None:
        try:
            repo = self.ctx.ecr.describe_repositories(repositoryNames=[self.config.name])["repositories"][0]
            return self.ctx.ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
        except ClientError:
            return None

    def status(self, mark: Mark) -> None:
        tags = self._tags()
        what = f"ecr repository {self.config.name}"
        mark(what, "missing" if tags is None else "ours" if self.ctx.is_ours(tags) else "not ours")

    def teardown(self, delete: Delete) -> None:
        tags = self._tags()
        if tags is not None and self.ctx.is_ours(tags):
            name = self.config.name
            delete(
                f"ecr repository {name} and its images",
                lambda: self.ctx.ecr.delete_repository(repositoryName=name, force=True),
            )
