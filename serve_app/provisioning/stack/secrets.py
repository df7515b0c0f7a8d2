"""The Secrets Manager secret the containers read (Discord keys, API keys, the origin header's value).

The bot token is never stored here: only `python -m bot_gateway.register`, on your machine, needs
it, and everything in this secret is readable by the head. A token an older bootstrap stored is
removed. The origin header's value is generated here once and kept: CloudFront sends it, the
ingress requires it.
"""

from __future__ import annotations

import json
import os
from secrets import token_urlsafe

from botocore.exceptions import ClientError

from serve_app.provisioning.stack.base import ORIGIN_SECRET_KEY, SECRET_KEYS, Delete, Family, Mark, Resolved

# Keys bootstrap never puts where the cluster can read them (and removes if an older run did).
CLUSTER_NEVER_READS = frozenset({"DISCORD_BOT_TOKEN"})


class ServiceSecret(Family):
    def ensure(self, resolved: Resolved) -> None:
        ctx, c = self.ctx, self.config
        if c.secret_id.startswith("arn:"):
            resolved.secret_arn_pattern = c.secret_id
        else:
            # Secrets Manager appends 6 random characters to a secret's ARN.
            prefix = f"arn:{resolved.partition}:secretsmanager:{c.region}:{resolved.account}:secret"
            resolved.secret_arn_pattern = f"{prefix}:{c.secret_id}-??????"
        values = {
            key: os.environ[key]
            for key in SECRET_KEYS
            if os.environ.get(key) and key not in CLUSTER_NEVER_READS
        }
        if os.environ.get("DISCORD_BOT_TOKEN"):
            ctx.say(
                "kept out", "DISCORD_BOT_TOKEN: only `python -m bot_gateway.register` (your machine) needs it"
            )
        try:
            described = ctx.secrets.describe_secret(SecretId=c.secret_id)
            exists = True
            if described.get("DeletedDate"):  # torn down within the last 7 days: bring it back
                ctx.say("restore", f"secret {c.secret_id} (was scheduled for deletion)")
                if ctx.dry_run:
                    return
                ctx.secrets.restore_secret(SecretId=c.secret_id)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            exists = False
        names = ", ".join(sorted(values)) or "no keys yet (set them and run bootstrap again)"
        if not exists:
            # Created even when empty, so the id the containers are given always resolves.
            values[ORIGIN_SECRET_KEY] = token_urlsafe(32)
            ctx.say("create", f"secret {c.secret_id}: {names}, {ORIGIN_SECRET_KEY} (generated)")
            resolved.origin_secret = values[ORIGIN_SECRET_KEY]
            if not ctx.dry_run:
                ctx.secrets.create_secret(Name=c.secret_id, SecretString=json.dumps(values), Tags=ctx.tags)
            return
        current = json.loads(ctx.secrets.get_secret_value(SecretId=c.secret_id).get("SecretString") or "{}")
        merged = {
            key: value for key, value in {**current, **values}.items() if key not in CLUSTER_NEVER_READS
        }
        merged.setdefault(ORIGIN_SECRET_KEY, token_urlsafe(32))
        resolved.origin_secret = merged[ORIGIN_SECRET_KEY]
        if merged == current:
            ctx.say("exists", f"secret {c.secret_id}: {', '.join(sorted(current)) or 'empty'}")
            return
        changed = sorted(key for key in {**merged, **current} if current.get(key) != merged.get(key))
        ctx.say("update", f"secret {c.secret_id}: {', '.join(changed)}")
        if not ctx.dry_run:
            ctx.secrets.put_secret_value(SecretId=c.secret_id, SecretString=json.dumps(merged))

    def _live_tags(self) -> list[dict[str, str]] | None:
        """The secret's tags; None when it is missing or scheduled for deletion."""
        try:
            secret = self.ctx.secrets.describe_secret(SecretId=self.config.secret_id)
        except ClientError:
            return None
        return None if secret.get("DeletedDate") else secret.get("Tags", [])

    def status(self, mark: Mark) -> None:
        c = self.config
        try:
            secret = self.ctx.secrets.describe_secret(SecretId=c.secret_id)
            if secret.get("DeletedDate"):
                mark(f"secret {c.secret_id} (scheduled for deletion)", "missing")
            else:
                mark(f"secret {c.secret_id}", "ours" if self.ctx.is_ours(secret.get("Tags")) else "not ours")
        except ClientError:
            mark(f"secret {c.secret_id}", "missing")

    def teardown(self, delete: Delete) -> None:
        c = self.config
        tags = self._live_tags()
        if tags is not None and self.ctx.is_ours(tags):
            # Recoverable for 7 days (Secrets Manager's shortest window): a mistaken teardown
            # does not lose the Discord credentials.
            delete(
                f"secret {c.secret_id} (recoverable for 7 days)",
                lambda: self.ctx.secrets.delete_secret(SecretId=c.secret_id, RecoveryWindowInDays=7),
            )
