"""A TCP relay that can go silent: what an AWS outage behind a black-holing network looks like.

Forwards to a local port (moto's standalone server) until ``hang`` is set; from then on it keeps
accepting and reading, and never answers, on new and kept-alive connections alike. Shared by the
Secrets Manager tests (tests/aws/test_secret_refresh.py) and the bench that times credential
lookups during such a hang (bench/credentials.py).
"""

from __future__ import annotations

import socket
import threading


class HangingRelay:
    """Forwards TCP to ``target_port`` until ``hang`` is set; then swallows bytes and never answers."""

    def __init__(self, target_port: int) -> None:
        self.hang = threading.Event()
        self.swallowed_requests = 0
        self._target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(client)
            if self.hang.is_set():
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            self._open.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        counted = False
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                return
            if not data:
                return
            if not counted:
                self.swallowed_requests += 1
                counted = True

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        counted = False
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.hang.is_set():  # a kept-alive connection goes silent too
                if from_client and not counted:
                    self.swallowed_requests += 1
                    counted = True
                continue
            counted = False
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            sock.close()
