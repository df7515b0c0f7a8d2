"""A local stand-in for Discord's HTTP API (real HTTP on loopback), and a Discord-style signer.

The server records every call (JSON or multipart, parsed), answers like Discord does, and can be
scripted to answer 429 or 5xx for the next calls to a path, to exercise the bot's retries. Like
Discord's CDN it serves files: ones a test hosts (a user's attachment) and every file uploaded with
a message edit, whose URLs come back in the edited message's ``attachments`` as Discord's do.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from nacl.signing import SigningKey


@dataclass
class RecordedCall:
    method: str
    path: str
    headers: dict[str, str]
    at: float
    status: int
    json: Any = None
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # part -> (name, type, data)
    connection: int = 0  # which TCP connection carried it (see FakeDiscord.closed_connections)
    answer: Any = None  # the JSON body answered (an edited message, as Discord returns it)

    @property
    def payload(self) -> Any:
        return self.json


@dataclass
class ScriptedAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FakeDiscord:
    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self.closed_connections: set[int] = set()
        self._connection_ids = itertools.count(1)
        self._script: dict[str, list[ScriptedAnswer]] = {}
        self._files: dict[str, tuple[str, bytes]] = {}  # path -> (content type, bytes)
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.connection_id = next(fake._connection_ids)

            def finish(self) -> None:
                super().finish()
                with fake._condition:  # the client closed the connection (or it broke)
                    fake.closed_connections.add(self.connection_id)
                    fake._condition.notify_all()

            def _handle(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                fake._record(self, body)

            do_PATCH = do_POST = do_PUT = do_GET = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.origin}/api/v10"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def host(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve ``data`` at ``path`` (as Discord's CDN serves attachments); returns its URL."""
        with self._lock:
            self._files[path.split("?", 1)[0]] = (content_type, data)  # the query is a signature
        return f"{self.origin}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, path_part: str, *answers: ScriptedAnswer) -> None:
        with self._lock:
            self._script.setdefault(path_part, []).extend(answers)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._script.clear()

    def calls_to(self, path_part: str) -> list[RecordedCall]:
        with self._lock:
            return [call for call in self.calls if path_part in call.path]

    def wait_for(self, predicate: Any, timeout_s: float, what: str) -> list[RecordedCall]:
        """Wait until ``predicate(calls)`` is truthy; returns the calls then."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while not predicate(list(self.calls)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; calls: {self.summary()}")
                self._condition.wait(remaining)
            return list(self.calls)

    def wait_closed(self, path_part: str, timeout_s: float) -> None:
        """Wait until every connection that carried a call to ``path_part`` has been closed."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                used = {c.connection for c in self.calls if path_part in c.path}
                if used <= self.closed_connections:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(used - self.closed_connections)} connection(s) left open")
                self._condition.wait(remaining)

    def summary(self) -> list[tuple[str, str, int]]:
        return [(c.method, c.path.split("/")[-1], c.status) for c in self.calls]

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        content_type = handler.headers.get("content-type", "")
        call = RecordedCall(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            at=time.monotonic(),
            status=200,
            connection=handler.connection_id,
        )
        if content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=default_policy).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
            )
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                data = part.get_payload(decode=True)
                if name == "payload_json":
                    call.json = json.loads(data)
                else:
                    call.files[name] = (part.get_filename(), part.get_content_type(), data)
        elif body:
            call.json = json.loads(body)
        with self._condition:
            answer = None
            for path_part, queue in self._script.items():
                if path_part in handler.path and queue:
                    answer = queue.pop(0)
                    break
            hosted = self._files.get(handler.path.split("?", 1)[0]) if handler.command == "GET" else None
            if answer is None and hosted is None:
                status = 204 if call.method == "DELETE" else 200
                answer = ScriptedAnswer(status, self._default_body(call))
                self._host_uploads(call, answer.body)
            call.status = answer.status if answer is not None else 200
            call.answer = answer.body if answer is not None else None
            self.calls.append(call)
            self._condition.notify_all()
        if answer is None and hosted is not None:
            content_type, content = hosted
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            handler.wfile.write(content)
            return
        assert answer is not None
        if answer.status == 204:  # Discord's answer to a deletion: no body at all
            handler.send_response(204)
            handler.end_headers()
            return
        data = json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in answer.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _host_uploads(self, call: RecordedCall, body: Any) -> None:
        """Files sent with a message become CDN URLs in the answered message (caller holds the lock)."""
        if not call.files or not isinstance(body, dict):
            return
        attachments = []
        for filename, content_type, data in call.files.values():
            path = f"/attachments/{len(self._files)}/{filename}"
            self._files[path] = (content_type, data)
            url = f"{self.origin}{path}"
            attachments.append(
                {
                    "id": str(9000 + len(self._files)),
                    "filename": filename,
                    "size": len(data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": content_type,
                }
            )
        body["attachments"] = attachments

    @staticmethod
    def _default_body(call: RecordedCall) -> Any:
        if call.method == "PUT" and call.path.endswith("/commands"):
            return [{"id": str(1000 + i), **command} for i, command in enumerate(call.json or [])]
        return {"id": "1", **(call.json or {})}


def snowflake(created_at: float | None = None) -> str:
    """An id as Discord makes them: the creation time in milliseconds since 2015 in the top bits."""
    created_ms = int((time.time() if created_at is None else created_at) * 1000)
    return str(((created_ms - 1_420_070_400_000) << 22) | (time.monotonic_ns() & 0x3FFFFF))


class DiscordSigner:
    """Signs interactions exactly as Discord does: Ed25519 over timestamp + raw body."""

    def __init__(self) -> None:
        self._key = SigningKey.generate()

    @property
    def public_key_hex(self) -> str:
        return self._key.verify_key.encode().hex()

    def headers(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        signature = self._key.sign(timestamp.encode() + body).signature.hex()
        return {
            "X-Signature-Ed25519": signature,
            "X-Signature-Timestamp": timestamp,
            "Content-Type": "application/json",
        }


def post_interaction(base: str, signer: DiscordSigner, interaction: dict[str, Any]) -> httpx.Response:
    """Send an interaction to the service's Discord endpoint, signed as Discord signs it."""
    body = json.dumps(interaction).encode()
    return httpx.post(f"{base}/discord/interactions", content=body, headers=signer.headers(body), timeout=30)


# Option types of /imagine (bot_gateway/commands.py): STRING 3, INTEGER 4, NUMBER 10.
IMAGINE_OPTION_TYPES = {
    "negative_prompt": 3, "seed": 4, "steps": 4, "size": 3, "guidance": 10, "count": 4, "ar": 3
}


def imagine_interaction(
    application_id: str,
    prompt: str = "a cat",
    user: str = "u1",
    guild: str | None = "g1",
    token: str | None = None,
    created_at: float | None = None,
    **options: object,
) -> dict[str, Any]:
    """An /imagine interaction as Discord sends it; its id is a snowflake of ``created_at`` (now)."""
    interaction: dict[str, Any] = {
        "id": snowflake(created_at),
        "application_id": application_id,
        "type": 2,
        "token": token or f"tok-{uuid.uuid4().hex}",
        "data": {
            "id": "cmd1",
            "name": "imagine",
            "type": 1,
            "options": [{"name": "prompt", "type": 3, "value": prompt}]
            + [{"name": k, "type": IMAGINE_OPTION_TYPES.get(k, 3), "value": v} for k, v in options.items()],
        },
        "attachment_size_limit": 10 * 1024 * 1024,
    }
    if guild is None:
        interaction["user"] = {"id": user, "username": user}
    else:
        interaction["guild_id"] = guild
        interaction["member"] = {"user": {"id": user, "username": user}}
    return interaction


def message_html(
    payload: dict[str, Any], attachments: list[dict[str, Any]], author: str = "raydiffusion"
) -> str:
    """A message as Discord's client lays it out (dark theme), from what the stand-in recorded: the
    edit's payload (content, embed, buttons) and the attachments it answered with (their CDN URLs,
    which this server serves). What the README's screenshot shows; never drawn by hand."""
    urls = {a["filename"]: a["url"] for a in attachments}
    parts = [f'<div class="author">{escape(author)} <span class="bot">APP</span></div>']
    if payload.get("content"):
        parts.append(f'<div class="content">{escape(payload["content"])}</div>')
    for embed in payload.get("embeds", []):
        fields = "".join(
            f'<div class="field{" inline" if f.get("inline") else ""}"><b>{escape(f["name"])}</b>'
            f"<span>{escape(f['value'])}</span></div>"
            for f in embed.get("fields", [])
        )
        image = embed.get("image", {}).get("url", "")
        src = urls.get(image.removeprefix("attachment://"), image)
        parts.append(
            f'<div class="embed" style="border-color:#{embed.get("color", 0):06x}">'
            f'<div class="title">{escape(embed.get("title", ""))}</div>'
            f'<div class="description">{escape(embed.get("description", ""))}</div>'
            f'<div class="fields">{fields}</div><img src="{escape(src)}" alt="grid"></div>'
        )
    styles = {1: "primary", 2: "secondary", 3: "success", 4: "danger", 5: "link"}
    for row in payload.get("components", []):
        buttons = "".join(
            f'<button class="{styles.get(b.get("style", 2), "secondary")}">'
            f"{escape(b.get('label', ''))}</button>"
            for b in row["components"]
        )
        parts.append(f'<div class="row">{buttons}</div>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ background:#313338; color:#dbdee1; margin:0;
  font:16px 'Noto Sans','Helvetica Neue',Arial,sans-serif; }}
.message {{ padding:16px 20px 16px 72px; position:relative; width:560px; }}
.message::before {{ content:''; position:absolute; left:16px; top:18px; width:40px; height:40px;
  border-radius:50%; background:#5865f2; }}
.author {{ color:#f2f3f5; font-weight:600; margin-bottom:4px; }}
.bot {{ background:#5865f2; color:#fff; font-size:10px; padding:1px 4px; border-radius:3px; }}
.content {{ margin-bottom:6px; }}
.embed {{ background:#2b2d31; border-left:4px solid; border-radius:4px; padding:10px 16px 16px 12px;
  max-width:432px; }}
.title {{ color:#00a8fc; font-weight:600; }} .description {{ margin:6px 0; font-size:14px; }}
.fields {{ display:flex; flex-wrap:wrap; gap:6px 0; font-size:13px; }}
.field {{ flex:0 0 100%; }} .field.inline {{ flex:0 0 33%; }}
.field b {{ display:block; color:#f2f3f5; }}
.embed img {{ margin-top:12px; width:400px; border-radius:4px; image-rendering:pixelated; }}
.row {{ display:flex; gap:8px; margin-top:8px; }}
button {{ border:0; border-radius:3px; color:#fff; font:500 14px inherit; height:32px; min-width:60px;
  padding:2px 16px; }}
.primary {{ background:#5865f2; }} .secondary {{ background:#4e5058; }} .success {{ background:#248046; }}
.danger {{ background:#da373c; }} .link {{ background:#4e5058; }}
</style></head><body><div class="message">{''.join(parts)}</div></body></html>"""
