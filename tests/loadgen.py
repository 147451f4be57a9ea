"""A small open-loop load generator over raw sockets, for the overload tests and bench/.

Each request is sent at its scheduled time, whatever the answers before it do (no coordinated
omission), on a kept-alive connection that is free or else a new one, as a load tester with a
large connection pool does; its latency is counted from that time. Raw asyncio streams keep the
client's own cost per request far below an HTTP library's, so that on a small machine the service,
not the client, is what saturates.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int
    seconds: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Outcome:
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # no answer: refused, reset, timed out

    def of(self, status: int) -> list[Answer]:
        return [a for a in self.answers if a.status == status]


def request_bytes(port: int, path: str, body: Any, headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head += f"Content-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Pool:
    """Kept-alive connections to one port, each carrying one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.free: list[Connection] = []

    async def send(self, request: bytes, timeout: float) -> Answer:
        started = time.perf_counter()
        if self.free:
            reader, writer = self.free.pop()
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), timeout)
        try:
            writer.write(request)
            status, headers, body = await asyncio.wait_for(read_answer(reader), timeout)
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.free.append((reader, writer))
        return Answer(status, time.perf_counter() - started, headers, body)

    def close(self) -> None:
        for _, writer in self.free:
            writer.close()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        raise ConnectionError(f"not an HTTP answer: {head[:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


async def _open_loop(
    port: int, request: bytes, rate: float, seconds: float, timeout: float, connections: int
) -> Outcome:
    outcome = Outcome()
    pool = Pool(port)
    for _ in range(connections):  # opened before the clock starts, as a client's pool is warm
        pool.free.append(await asyncio.open_connection("127.0.0.1", port))

    async def one() -> None:
        try:
            outcome.answers.append(await pool.send(request, timeout))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            outcome.errors.append(f"{type(exc).__name__}: {exc}")

    tasks = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    pool.close()
    return outcome


async def _closed_loop(port: int, request: bytes, clients: int, seconds: float) -> list[Answer]:
    answers: list[Answer] = []
    end = time.perf_counter() + seconds
    pool = Pool(port)

    async def client() -> None:
        while time.perf_counter() < end:
            answers.append(await pool.send(request, 30.0))

    await asyncio.gather(*(client() for _ in range(clients)))
    pool.close()
    return answers


def open_loop(
    port: int, request: bytes, rate: float, seconds: float, timeout: float = 20.0, connections: int = 0
) -> Outcome:
    """`rate` requests a second for `seconds`, each on schedule, from `connections` opened before
    (more are opened when they are all busy)."""
    return asyncio.run(_open_loop(port, request, rate, seconds, timeout, connections))


def closed_loop(port: int, request: bytes, clients: int, seconds: float) -> list[Answer]:
    """`clients` clients sending back to back for `seconds`: what the service can answer."""
    return asyncio.run(_closed_loop(port, request, clients, seconds))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
