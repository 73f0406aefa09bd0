"""Webhook deliveries: JSON POSTs signed with HMAC-SHA256 over "<timestamp>.<body>", retried
with exponential backoff for at least an hour, each with its event id for deduplication.

Every node runs a deliverer; a due delivery is claimed by one of them for LEASE_S (the claim
is one UPDATE, its rows locked and skipped by the others on PostgreSQL), so each is attempted
by one node at a time; a node that dies mid-delivery leaves it to another after the lease.

Receivers are checked twice, so that a webhook cannot be turned against the host or its
network (SSRF): a URL naming a forbidden address stops the start (``check_webhook_url``, from
the settings), and at each delivery the receiver's name is resolved, every address checked,
and the request sent to the checked address (``pinned_target``), so that a name re-pointed
after the check (DNS rebinding) changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from improv_capture.clock import utc_now_iso
from improv_capture.database.base import (
    Database,
    DatabaseUnavailable,
    execute,
    fetch,
    fetchval,
)
from improv_capture.downstream.events import EventLog

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Improv-Signature"
TIMESTAMP_HEADER = "X-Improv-Timestamp"
EVENT_ID_HEADER = "X-Improv-Event-Id"
MAX_DELAY_S = 600.0
#: deliveries one node claims at once, and for how long: past it another node may take them.
#: Longer than CLAIM_BATCH attempts of REQUEST_TIMEOUT_S each.
CLAIM_BATCH = 10
REQUEST_TIMEOUT_S = 10.0
LEASE_S = CLAIM_BATCH * REQUEST_TIMEOUT_S + 30.0


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_PRIVATE_HINT = "set IMPROV_WEBHOOK_ALLOW_PRIVATE=true to allow loopback and private receivers"


class TargetRefused(ValueError):
    """A webhook receiver the policy forbids."""


def forbidden_kind(address: IPAddress, allow_private: bool) -> str | None:
    """Why ``address`` may not receive webhooks, or None. Link-local (169.254.169.254 is the
    cloud metadata service), multicast, unspecified and reserved addresses never may;
    loopback and private ones only with ``allow_private``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("link_local", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if address.is_loopback:
        return None if allow_private else "loopback"
    if not address.is_global:
        return None if allow_private else "private"
    return None


def _refusal(url: str, host: str, address: IPAddress, kind: str, resolved: bool) -> TargetRefused:
    what = f"{host} resolves to {address}, a {kind} address" if resolved else f"{host} is a {kind} address"
    hint = f"; {ALLOW_PRIVATE_HINT}" if kind in ("loopback", "private") else ""
    return TargetRefused(f"webhook URL {url}: {what}, not allowed{hint}")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_webhook_url(url: str, allow_private: bool) -> None:
    """Refuse what no delivery could be allowed to reach: another scheme than http(s), no
    host, or a literal address the policy forbids (names are checked at each delivery)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise TargetRefused(f"webhook URL {url}: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise TargetRefused(f"webhook URL {url}: only http and https receivers are allowed")
    if not parts.hostname:
        raise TargetRefused(f"webhook URL {url}: no host")
    address = _literal(parts.hostname)
    if address is not None:
        kind = forbidden_kind(address, allow_private)
        if kind is not None:
            raise _refusal(url, parts.hostname, address, kind, resolved=False)


async def pinned_target(url: str, allow_private: bool) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """The URL to send to (the receiver's checked address), with the Host header and TLS
    server name of the original, so the name is resolved once and checked before use."""
    target = httpx.URL(url)
    if _literal(target.host) is not None:
        check_webhook_url(url, allow_private)
        return target, {}, {}
    infos = await asyncio.get_running_loop().getaddrinfo(
        target.host, target.port or (443 if target.scheme == "https" else 80),
        type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        kind = forbidden_kind(address, allow_private)
        if kind is not None:
            raise _refusal(url, target.host, address, kind, resolved=True)
    if not addresses:
        raise TargetRefused(f"webhook URL {url}: {target.host} does not resolve")
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return (target.copy_with(host=str(addresses[0])), {"Host": target.netloc.decode("ascii")},
            extensions)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Deliverer:
    def __init__(
        self, db: Database, events: EventLog, secret: str, backoff_s: float, give_up_s: float,
        allow_private: bool = False,
    ) -> None:
        self._db = db
        self._events = events
        self._secret = secret
        self._backoff_s = backoff_s
        self._give_up_s = give_up_s
        self._allow_private = allow_private
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _claim(self) -> list[dict[str, Any]]:
        """Due deliveries no other node holds, now held by this one for LEASE_S."""
        now = time.time()
        async with self._db.transaction() as c:
            claimed = [r["id"] for r in await c.fetch(
                "UPDATE deliveries SET lease_until=? WHERE id IN (SELECT id FROM deliveries"
                " WHERE status='pending' AND next_attempt <= ? AND (lease_until IS NULL OR lease_until < ?)"
                f" ORDER BY id LIMIT ?{self._db.dialect.skip_locked}) RETURNING id",
                now + LEASE_S, now, now, CLAIM_BATCH)]
            if not claimed:
                return []
            marks = ",".join("?" * len(claimed))
            return await c.fetch(
                "SELECT d.id, d.url, d.attempts, d.created, e.id AS event_id, e.type,"
                " e.data, e.created_at FROM deliveries d JOIN events e ON e.id = d.event_id"
                f" WHERE d.id IN ({marks}) ORDER BY d.id", *claimed)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
            while True:
                try:
                    for delivery in await self._claim():
                        await self._attempt(client, delivery)
                    wait = await fetchval(self._db, "SELECT MIN(next_attempt) FROM deliveries"
                                          " WHERE status='pending'")
                except DatabaseUnavailable:
                    wait = None
                except Exception:
                    logger.exception("webhook deliveries: a round failed")
                    wait = None
                # another node's deliveries fall due without a wake-up here
                timeout = 5.0 if wait is None else max(0.05, min(5.0, wait - time.time()))
                self._events.delivery_wanted.clear()
                try:
                    await asyncio.wait_for(self._events.delivery_wanted.wait(), timeout)
                except TimeoutError:
                    pass

    async def _attempt(self, client: httpx.AsyncClient, delivery: dict[str, Any]) -> None:
        body = json.dumps({
            "id": delivery["event_id"], "type": delivery["type"],
            "created_at": delivery["created_at"], "data": json.loads(delivery["data"]),
        }).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: str(delivery["event_id"]),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        status, error = None, None
        try:
            target, host, extensions = await pinned_target(delivery["url"], self._allow_private)
            response = await client.post(target, content=body, headers={**headers, **host},
                                         extensions=extensions)
            status = response.status_code
        except (httpx.HTTPError, OSError, TargetRefused) as exc:  # OSError: the name did not resolve
            error = str(exc) or type(exc).__name__
        attempts = delivery["attempts"] + 1
        if status is not None and 200 <= status < 300:
            update: tuple[Any, ...] = (
                ("UPDATE deliveries SET status='delivered', attempts=?, last_status=?,"
                 " delivered_at=?, lease_until=NULL WHERE id=?"),
                attempts, status, utc_now_iso(), delivery["id"])
        else:
            delay = min(self._backoff_s * 2 ** (attempts - 1), MAX_DELAY_S)
            gone = time.time() + delay - delivery["created"] > self._give_up_s
            update = (("UPDATE deliveries SET status=?, attempts=?, last_status=?, last_error=?,"
                       " next_attempt=?, lease_until=NULL WHERE id=?"),
                      "failed" if gone else "pending", attempts, status, error,
                      time.time() + delay, delivery["id"])
        await execute(self._db, *update)

    async def backlog(self) -> dict[str, int]:
        """Deliveries still to be made (``pending``) and given up (``failed``), for /metrics:
        each a count over the due index, never over every delivery ever made."""
        return {status: int(await fetchval(self._db, "SELECT COUNT(*) FROM deliveries WHERE status=?",
                                           status))
                for status in ("pending", "failed")}

    async def list(self, limit: int = 200) -> list[dict[str, Any]]:
        return await fetch(
            self._db, "SELECT id, event_id, url, status, attempts, last_status, last_error, delivered_at"
            " FROM deliveries ORDER BY id DESC LIMIT ?", limit)
