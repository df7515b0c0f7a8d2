"""An HTTP relay in front of moto's server that fails the way real AWS fails and moto does not.

Every request is forwarded to moto unchanged. On the way:

- **IAM evaluation** (``relay.policies[access_key_id] = [documents]``): a request signed with a
  mapped access key is authorised against those documents by ``policy_eval.is_allowed`` with the
  request context AWS would build (EC2 resource ARNs with ``ec2:InstanceType``, ``ec2:CreateAction``
  and the target instance's ``aws:ResourceTag/*``; ``iam:PassRole`` for an instance profile; S3
  object and bucket ARNs with ``s3:prefix`` only when the listing names one). Denied: 403, in the
  service's own error format. Services other than EC2 and S3 are denied to mapped keys (fail
  closed: a call nobody modelled shows up as a failure; CloudWatch's PutMetricAlarm is modelled).
  Keys not mapped (the test's admin) pass.
- **S3's 403 for a missing key**: a GetObject/HeadObject that moto answers 404 becomes 403
  AccessDenied unless the caller holds an ``s3:ListBucket`` that applies to the bucket with no
  ``s3:prefix`` in the context, as S3 documents.
- **No spot capacity** (``relay.fail_spot = True``): a RunInstances asking for the spot market is
  answered ``InsufficientInstanceCapacity`` (HTTP 500, EC2's error body), as AWS does at once.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from policy_eval import Context, is_allowed

ACCOUNT = "123456789012"  # moto's default account
_CREDENTIAL = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/")

Check = tuple[str, str, Context]


class AwsRelay:
    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.policies: dict[str, list[dict[str, Any]]] = {}
        self.fail_spot = False
        self.spot_refusals = 0
        self.denied: list[tuple[str, str]] = []  # (action, resource), for assertions and messages
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                relay._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> AwsRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _admin(self, service: str, region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=urllib.parse.urlunsplit(self.upstream),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    # ---- the request path -----------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        match = _CREDENTIAL.search(request.headers.get("Authorization", ""))
        key, region, service = match.groups() if match else ("", "us-east-1", "")
        policies = self.policies.get(key)
        checks: list[Check] = []
        if policies is not None:
            checks = self._checks(service, region, request, body)
            for action, resource, context in checks:
                if not is_allowed(policies, action, resource, context):
                    with self._lock:
                        self.denied.append((action, resource))
                    return self._deny(request, service, action, resource)
        if service == "ec2" and self.fail_spot:
            params = urllib.parse.parse_qs(body.decode())
            if params.get("Action") == ["RunInstances"] and params.get(
                "InstanceMarketOptions.MarketType"
            ) == ["spot"]:
                with self._lock:
                    self.spot_refusals += 1
                return self._reply(
                    request,
                    500,
                    "text/xml",
                    _ec2_error(
                        "InsufficientInstanceCapacity",
                        "We currently do not have sufficient capacity in the Availability Zone "
                        "you requested.",
                    ),
                )
        status, headers, answer = self._forward(request, body)
        if (
            policies is not None
            and service == "s3"
            and status == 404
            and checks
            and checks[0][0] == "s3:GetObject"
            and not is_allowed(policies, "s3:ListBucket", f"arn:aws:s3:::{_s3_path(request.path)[0]}", {})
        ):
            # S3 does not tell a caller who may not list the bucket whether a key exists.
            with self._lock:
                self.denied.append(("s3:GetObject (missing key)", checks[0][1]))
            return self._s3_access_denied(request)
        self._send(request, status, headers, answer)

    def _forward(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in {"connection", "transfer-encoding"}
        }
        connection.request(request.command, request.path, body=body or None, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        connection.close()
        return response.status, response.getheaders(), answer

    def _send(
        self, request: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        request.send_response(status)
        for name, value in headers:
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)

    def _reply(self, request: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
        self._send(request, status, [("Content-Type", content_type)], body)

    def _deny(self, request: BaseHTTPRequestHandler, service: str, action: str, resource: str) -> None:
        message = f"not authorized to perform: {action} on resource: {resource}"
        if service == "s3":
            return self._s3_access_denied(request, message)
        if service == "ec2":
            return self._reply(request, 403, "text/xml", _ec2_error("UnauthorizedOperation", message))
        body = f'{{"__type": "AccessDeniedException", "message": "{message}"}}'.encode()
        return self._reply(request, 400, "application/x-amz-json-1.1", body)

    def _s3_access_denied(self, request: BaseHTTPRequestHandler, message: str = "Access Denied") -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>{message}</Message><RequestId>relay</RequestId></Error>"
        ).encode()
        self._reply(request, 403, "application/xml", body)

    # ---- what AWS would authorise -----------------------------------------------------------------
    def _checks(self, service: str, region: str, request: BaseHTTPRequestHandler, body: bytes) -> list[Check]:
        if service == "s3":
            return _s3_checks(request, body)
        if service == "ec2":
            return self._ec2_checks(region, urllib.parse.parse_qs(body.decode()))
        if service == "monitoring":  # CloudWatch speaks JSON, RPC v2 CBOR or query, by botocore version
            target = request.headers.get("X-Amz-Target", "")
            path = urllib.parse.urlsplit(request.path).path
            form = (
                urllib.parse.parse_qs(body.decode("latin-1"))
                if not target and "/operation/" not in path
                else {}
            )
            action = (
                target.rsplit(".", 1)[-1]
                if target
                else path.rsplit("/", 1)[-1]
                if "/operation/" in path
                else form.get("Action", [""])[0]
            )
            if action == "PutMetricAlarm":
                if target:
                    name = json.loads(body)["AlarmName"]
                elif form:
                    name = form["AlarmName"][0]
                else:
                    name = _cbor_text_after(body, "AlarmName")
                return [
                    ("cloudwatch:PutMetricAlarm", f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:{name}", {})
                ]
            return [(f"cloudwatch:{action}", "*", {})]
        return [(f"{service}:*", "*", {"relay": "unmodelled"})] if service else [("unknown:*", "*", {})]

    def _instance_tags(self, region: str, instance_id: str) -> Context:
        reservations = self._admin("ec2", region).describe_instances(InstanceIds=[instance_id])[
            "Reservations"
        ]
        tags = reservations[0]["Instances"][0].get("Tags", []) if reservations else []
        # EC2 sets both spellings of the resource-tag condition key.
        context: Context = {}
        for t in tags:
            context[f"aws:ResourceTag/{t['Key']}"] = context[f"ec2:ResourceTag/{t['Key']}"] = t["Value"]
        return context

    def _ec2_checks(self, region: str, params: dict[str, list[str]]) -> list[Check]:
        action = params.get("Action", [""])[0]
        arn = f"arn:aws:ec2:{region}:{ACCOUNT}"

        def numbered(prefix: str) -> list[str]:
            return [v[0] for k, v in sorted(params.items()) if re.fullmatch(rf"{re.escape(prefix)}\.\d+", k)]

        if action == "RunInstances":
            one = {k: v[0] for k, v in params.items()}
            checks: list[Check] = [
                (
                    "ec2:RunInstances",
                    f"{arn}:instance/*",
                    {"ec2:InstanceType": one.get("InstanceType", "m1.small")},
                ),
                ("ec2:RunInstances", f"arn:aws:ec2:{region}::image/{one['ImageId']}", {}),
                ("ec2:RunInstances", f"{arn}:subnet/{one.get('SubnetId', '*')}", {}),
                ("ec2:RunInstances", f"{arn}:network-interface/*", {}),
                ("ec2:RunInstances", f"{arn}:volume/*", {}),
            ]
            checks += [
                ("ec2:RunInstances", f"{arn}:security-group/{g}", {}) for g in numbered("SecurityGroupId")
            ]
            if "KeyName" in one:
                checks.append(("ec2:RunInstances", f"{arn}:key-pair/{one['KeyName']}", {}))
            if one.get("InstanceMarketOptions.MarketType") == "spot":
                checks.append(("ec2:RunInstances", f"{arn}:spot-instances-request/*", {}))
            for name, value in one.items():
                if re.fullmatch(r"TagSpecification\.\d+\.ResourceType", name):
                    checks.append(
                        ("ec2:CreateTags", f"{arn}:{value}/*", {"ec2:CreateAction": "RunInstances"})
                    )
            profile = (
                one.get("IamInstanceProfile.Name") or one.get("IamInstanceProfile.Arn", "").split("/")[-1]
            )
            if profile:
                roles = self._admin("iam", region).get_instance_profile(InstanceProfileName=profile)
                for role in roles["InstanceProfile"]["Roles"]:
                    checks.append(("iam:PassRole", role["Arn"], {}))
            return checks
        if action == "CreateTags":
            return [
                ("ec2:CreateTags", f"{arn}:instance/{i}", self._instance_tags(region, i))
                for i in numbered("ResourceId")
            ]
        if action in {"TerminateInstances", "StopInstances", "StartInstances"}:
            return [
                (f"ec2:{action}", f"{arn}:instance/{i}", self._instance_tags(region, i))
                for i in numbered("InstanceId")
            ]
        if action == "AssociateAddress":
            checks = [("ec2:AssociateAddress", f"{arn}:elastic-ip/{params['AllocationId'][0]}", {})]
            if "InstanceId" in params:
                instance = params["InstanceId"][0]
                checks.append(
                    (
                        "ec2:AssociateAddress",
                        f"{arn}:instance/{instance}",
                        self._instance_tags(region, instance),
                    )
                )
            return checks
        return [(f"ec2:{action}", "*", {})]


def linux_amis(ec2: Any) -> list[str]:
    """moto's Linux x86_64 EBS-backed images: what the cluster can boot (the catalogue's first
    images include Windows ones, and images moto creates from an instance have no EBS root)."""
    images = ec2.describe_images(
        Owners=["amazon"],
        Filters=[
            {"Name": "architecture", "Values": ["x86_64"]},
            {"Name": "root-device-type", "Values": ["ebs"]},
        ],
    )["Images"]
    return [
        i["ImageId"]
        for i in images
        if "windows" not in (i.get("PlatformDetails") or i.get("Platform") or "Linux/UNIX").lower()
    ]


def _s3_path(path: str) -> tuple[str, str, dict[str, list[str]]]:
    parts = urllib.parse.urlsplit(path)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    return bucket, urllib.parse.unquote(key), urllib.parse.parse_qs(parts.query, keep_blank_values=True)


def _s3_checks(request: BaseHTTPRequestHandler, body: bytes) -> list[Check]:
    bucket, key, query = _s3_path(request.path)
    method = request.command
    if key:
        action = {
            "GET": "s3:GetObject",
            "HEAD": "s3:GetObject",
            "PUT": "s3:PutObject",
            "DELETE": "s3:DeleteObject",
        }
        return [(action.get(method, f"s3:Unmodelled{method}"), f"arn:aws:s3:::{bucket}/{key}", {})]
    if method == "POST" and "delete" in query:
        keys = re.findall(rb"<Key>(.*?)</Key>", body)
        return [("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{k.decode()}", {}) for k in keys]
    if method in {"GET", "HEAD"} and not (
        set(query)
        - {
            "list-type",
            "prefix",
            "delimiter",
            "continuation-token",
            "max-keys",
            "encoding-type",
            "start-after",
            "fetch-owner",
        }
    ):
        context: Context = {"s3:prefix": query["prefix"][0]} if "prefix" in query else {}
        return [("s3:ListBucket", f"arn:aws:s3:::{bucket}", context)]
    return [(f"s3:Unmodelled{method}", f"arn:aws:s3:::{bucket}", {"query": ",".join(sorted(query))})]


def _cbor_text(data: bytes, at: int) -> tuple[str, int]:
    """The CBOR text string starting at ``at`` (major type 3, definite length) and where it ends."""
    head = data[at]
    if head >> 5 != 3:
        raise ValueError("not a CBOR text string")
    length, start = head & 0x1F, at + 1
    if length == 24:
        length, start = data[at + 1], at + 2
    elif length == 25:
        length, start = int.from_bytes(data[at + 1 : at + 3], "big"), at + 3
    return data[start : start + length].decode(), start + length


def _cbor_text_after(data: bytes, key: str) -> str:
    """The text value of ``key`` in a CBOR map (enough for the string members a request carries)."""
    encoded = bytes([0x60 + len(key)]) + key.encode()
    at = data.index(encoded) + len(encoded)
    return _cbor_text(data, at)[0]


def _ec2_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error></Errors><RequestID>relay</RequestID></Response>"
    ).encode()
