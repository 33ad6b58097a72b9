"""Loopback stand-ins for the two notification channels: a real SMTP server (aiosmtpd) and an HTTP server
in the place of Slack's incoming webhook. Each test gets its own, on a free port, stopped afterwards."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller


@dataclass
class Mailbox:
    """What the loopback SMTP server received: one (envelope sender, recipients, parsed message) each."""

    port: int = 0
    received: list[tuple[str, list[str], Message]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered with 550

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.original_content))
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(monkeypatch) -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1 and the Airflow connection ``mail_loopback`` pointing at it (plain SMTP,
    no TLS, one attempt)."""
    with socket.socket() as probe:  # the Controller checks it is up by connecting, so it needs a real port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox(port=port)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAIL_LOOPBACK",
            json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": mailbox.port,
                    "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 1, "timeout": 10},
                }
            ),
        )
        yield mailbox
    finally:
        controller.stop()


@dataclass
class Webhook:
    """What the loopback webhook received (path, JSON body), and how it answers."""

    url: str = ""
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    answer: str = "ok"


@pytest.fixture
def slack_webhook() -> Iterator[Webhook]:
    """An HTTP server on 127.0.0.1 answering POSTs as Slack's incoming webhook does (200 "ok")."""
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            hook.posts.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
            body = hook.answer.encode()
            self.send_response(hook.status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hook.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
