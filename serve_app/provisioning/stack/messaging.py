"""The SNS topic failure alerts go to, and the head-lost alarm that publishes to it.

The alarm is created by the head itself at boot (serve_app/provisioning/head_address.py: only it
knows its instance id); teardown removes it with the topic.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from serve_app.provisioning.stack.base import Delete, Family, Mark, ProvisioningError, Resolved


class AlertsTopic(Family):
    @property
    def name(self) -> str:
        return f"{self.config.name}-alerts"

    def arn(self) -> str:
        identity = self.ctx.sts.get_caller_identity()
        partition = identity["Arn"].split(":")[1]
        return f"arn:{partition}:sns:{self.config.region}:{identity['Account']}:{self.name}"

    def _tags(self, arn: str) -> list[dict[str, str]] | None:
        """The topic's tags, or None when it does not exist."""
        try:
            return self.ctx.sns.list_tags_for_resource(ResourceArn=arn)["Tags"]
        except ClientError:
            return None

    def ensure(self, resolved: Resolved) -> None:
        """The SNS topic failure alerts go to (a failed job, an undeliverable Discord message).

        Subscribe an email or a chat webhook to it yourself: subscriptions need a confirmation
        only the owner of the address can give.
        """
        ctx, name = self.ctx, self.name
        resolved.alerts_topic_arn = (
            f"arn:{resolved.partition}:sns:{self.config.region}:{resolved.account}:{name}"
        )
        tags = self._tags(resolved.alerts_topic_arn)
        if tags is not None:
            if not ctx.is_ours(tags):
                raise ProvisioningError(f"sns topic {name} exists and was not created by raydiffusion-aws")
            ctx.say("exists", f"sns topic {name} (failure alerts)")
            return
        ctx.say("create", f"sns topic {name} (failure alerts; subscribe to it yourself)")
        if not ctx.dry_run:
            resolved.alerts_topic_arn = ctx.sns.create_topic(Name=name, Tags=ctx.tags)["TopicArn"]

    def status(self, mark: Mark) -> None:
        tags = self._tags(self.arn())
        mark(
            f"sns topic {self.name}",
            "missing" if tags is None else "ours" if self.ctx.is_ours(tags) else "not ours",
        )

    def teardown(self, delete: Delete) -> None:
        alarm = f"{self.config.name}-head-lost"
        if self.ctx.cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]:
            delete(f"cloudwatch alarm {alarm}", lambda: self.ctx.cloudwatch.delete_alarms(AlarmNames=[alarm]))
        arn = self.arn()
        tags = self._tags(arn)
        if tags is not None and self.ctx.is_ours(tags):
            delete(f"sns topic {self.name}", lambda: self.ctx.sns.delete_topic(TopicArn=arn))
