"""An open-loop HTTP/1.1 load generator: requests leave at a constant arrival rate, whatever the
service does, and each one's latency is measured from the moment it was DUE, not from the moment it
could be sent. A service that stalls for a second therefore shows a second (and the queue behind it)
in the percentiles, where a closed loop (a client waiting for each answer before the next request)
would simply send less and hide the stall: "coordinated omission".

Why our own: the established generators that are open-loop and correct for coordinated omission
(wrk2, vegeta, k6) are not installable from the Python package index, and locust's users are closed
loops. This one is asyncio over raw keep-alive connections (a `Protocol` per connection, requests
pre-encoded, a minimal response parser), a bounded pool: a request that waits for a free connection
is still timed from its due time. One process, one core: its own lateness is measured and reported
(`lag`) so that a report can say when the generator, not the service, fell behind.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# outcome codes beside HTTP statuses
TIMEOUT = -1  # no complete answer within the timeout (counted from the due time)
NO_ANSWER = 0  # the connection failed or closed before an answer
LATE_MS = 10.0  # the dispatcher sending a request later than this behind its schedule is lagging
LATE_SHARE = 0.01  # ... for more than this share of the requests: the generator limited the run
SWEEP_S = 0.05  # how often requests past their timeout are looked for


@dataclass(frozen=True)
class Target:
    """Where the load goes: host, port, TLS, and the base path before every route."""

    host: str
    port: int
    tls: bool
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname or "127.0.0.1", port, tls, parts.path.rstrip("/"))


def encode_request(target: Target, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One request's bytes, ready to write on a keep-alive connection."""
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    lines = [f"{method} {target.base_path}{path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Outcome:
    """Per request, in schedule order: when it was due, sent and answered (seconds from the start),
    its status (or TIMEOUT / NO_ANSWER); the bodies of the requests chosen for answer checks."""

    due: array[float]
    sent: array[float]
    done: array[float]
    status: array[int]
    bodies: dict[int, bytes] = field(default_factory=dict)
    dispatch_lag: array[float] = field(default_factory=lambda: array("d"))
    seconds: float = 0.0  # wall time from the first due request to the last answer or timeout
    cpu_seconds: float = 0.0  # the generator process's CPU time meanwhile
    connections: int = 0  # opened over the run
    errors: dict[str, int] = field(default_factory=dict)  # why connections failed, by kind

    @property
    def late_share(self) -> float:
        late = sum(1 for lag in self.dispatch_lag if lag * 1000 > LATE_MS)
        return late / len(self.dispatch_lag) if self.dispatch_lag else 0.0

    @property
    def generator_limited(self) -> bool:
        """The generator's own loop sent more than LATE_SHARE of the requests over LATE_MS late."""
        return self.late_share > LATE_SHARE


@dataclass
class Plan:
    """What to send: request `i` (the bytes `request(i)`) is due at i / rate s after the start; the
    answer bodies of the requests `keep(i)` chooses are kept (to be checked)."""

    request: Callable[[int], bytes]
    rate: float
    duration: float
    timeout: float = 10.0
    connections: int = 256  # at most this many open at once (one request in flight on each)
    keep: Callable[[int], bool] = lambda i: False

    @property
    def total(self) -> int:
        return max(1, math.floor(self.rate * self.duration))


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; answers parsed as they come."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.current = -1  # the request in flight
        self.buffer = bytearray()
        self.need = -1  # bytes of the whole answer, once its head is read
        self.chunked = False
        self.status = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, index: int) -> None:
        assert self.transport is not None
        self.current = index
        self.run.outcome.sent[index] = self.run.clock()
        self.transport.write(self.run.plan.request(index))

    def data_received(self, data: bytes) -> None:
        if self.current < 0:
            return  # an answer to a request already timed out: the connection is being closed
        self.buffer += data
        while self.current >= 0 and self._complete():
            pass

    def _complete(self) -> bool:
        """Parse what is buffered; finish the current request when its answer is whole."""
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                self.status = int(head[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                self._fail("not HTTP")
                return False
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif name == "connection" and value.strip().lower() == "close":
                    self.closing = True
            del self.buffer[: end + 4]
            self.need = length
        if self.chunked:
            body = self._dechunk()
            if body is None:
                return False
        else:
            if len(self.buffer) < self.need:
                return False
            body = bytes(self.buffer[: self.need])
            del self.buffer[: self.need]
        index, status = self.current, self.status
        self.current, self.need, self.chunked = -1, -1, False
        self.run.answered(self, index, status, body)
        return True

    def _dechunk(self) -> bytes | None:
        """The body of a whole chunked answer (consumed from the buffer), or None: not whole yet."""
        body, pos = bytearray(), 0
        while True:
            end = self.buffer.find(b"\r\n", pos)
            if end < 0:
                return None
            size = int(bytes(self.buffer[pos:end]).split(b";")[0], 16)
            if size == 0:
                trailer = self.buffer.find(b"\r\n\r\n", end)
                if trailer < 0 and not self.buffer.startswith(b"\r\n", end + 2):
                    return None
                stop = end + 4 if self.buffer.startswith(b"\r\n", end + 2) else trailer + 4
                del self.buffer[:stop]
                return bytes(body)
            if len(self.buffer) < end + 2 + size + 2:
                return None
            body += self.buffer[end + 2 : end + 2 + size]
            pos = end + 2 + size + 2

    def _fail(self, why: str) -> None:
        index, self.current = self.current, -1
        self.run.lost(self, index, why)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.current >= 0:
            self._fail(type(exc).__name__ if exc else "closed by the server")
        self.run.closed(self)


class _Run:
    """The schedule, the pool and the outcome of one run."""

    def __init__(self, target: Target, plan: Plan, progress: Callable[[int, int], None] | None) -> None:
        self.target, self.plan, self.progress = target, plan, progress
        n = plan.total
        times = [array("d", bytes(8 * n)) for _ in range(4)]
        self.outcome = Outcome(times[0], times[1], times[2], array("i", bytes(4 * n)), dispatch_lag=times[3])
        self.waiting: deque[int] = deque()  # due, no free connection yet
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.opening = 0
        self.finished = 0
        self.all_done = asyncio.get_running_loop().create_future()
        self.loop = asyncio.get_running_loop()
        self.start = 0.0
        self.tls = ssl.create_default_context() if target.tls else None

    def clock(self) -> float:
        return self.loop.time() - self.start

    async def go(self) -> Outcome:
        plan, outcome = self.plan, self.outcome
        interval = 1.0 / plan.rate
        cpu = time.process_time()
        self.start = self.loop.time() + 0.01
        sweeper = self.loop.create_task(self._sweep())
        reporter = self.loop.create_task(self._report()) if self.progress else None
        i = 0
        try:
            while i < plan.total:
                due = i * interval
                now = self.clock()
                if due > now:
                    await asyncio.sleep(due - now)
                    now = self.clock()
                # send everything due by now: after a late wake-up, several at once
                while i < plan.total and i * interval <= now:
                    outcome.due[i] = i * interval
                    outcome.dispatch_lag[i] = now - i * interval
                    self._dispatch(i)
                    i += 1
            await self.all_done
        finally:
            sweeper.cancel()
            if reporter:
                reporter.cancel()
            for conn in [*self.idle, *self.busy]:
                if conn.transport:
                    conn.transport.close()
        outcome.seconds = self.clock()
        outcome.cpu_seconds = time.process_time() - cpu
        if self.progress:
            self.progress(self.finished, plan.total)
        return outcome

    def _dispatch(self, index: int) -> None:
        if self.idle:
            conn = self.idle.pop()
            self.busy.add(conn)
            conn.send(index)
            return
        self.waiting.append(index)
        if len(self.busy) + len(self.idle) + self.opening < self.plan.connections:
            self.opening += 1
            self.loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.target.host, self.target.port, ssl=self.tls
            )
        except OSError as exc:
            self.opening -= 1
            # a connection that cannot be made fails the request it was opened for
            if self.waiting:
                self._finish(self.waiting.popleft(), NO_ANSWER, type(exc).__name__)
            return
        self.opening -= 1
        self.outcome.connections += 1
        self._next(conn)

    def _next(self, conn: _Connection) -> None:
        """Give a free connection the oldest waiting request, or keep it idle."""
        if self.waiting:
            self.busy.add(conn)
            conn.send(self.waiting.popleft())
        else:
            self.busy.discard(conn)
            self.idle.append(conn)

    def answered(self, conn: _Connection, index: int, status: int, body: bytes) -> None:
        if self.plan.keep(index):
            self.outcome.bodies[index] = body
        self._finish(index, status)
        if conn.closing:
            self.busy.discard(conn)
            if conn.transport:
                conn.transport.close()
        else:
            self._next(conn)

    def lost(self, conn: _Connection, index: int, why: str) -> None:
        self._finish(index, NO_ANSWER, why)

    def closed(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if self.waiting and len(self.busy) + len(self.idle) + self.opening < self.plan.connections:
            self.opening += 1
            self.loop.create_task(self._open())

    def _finish(self, index: int, status: int, why: str = "") -> None:
        outcome = self.outcome
        outcome.done[index] = self.clock()
        outcome.status[index] = status
        if why:
            outcome.errors[why] = outcome.errors.get(why, 0) + 1
        self.finished += 1
        if self.finished == self.plan.total and not self.all_done.done():
            self.all_done.set_result(None)

    async def _sweep(self) -> None:
        """Time out what waited or ran longer than the timeout since it was due."""
        due, timeout = self.outcome.due, self.plan.timeout
        while True:
            await asyncio.sleep(SWEEP_S)
            now = self.clock()
            while self.waiting and now - due[self.waiting[0]] > timeout:
                self._finish(self.waiting.popleft(), TIMEOUT)
            for conn in [c for c in self.busy if c.current >= 0 and now - due[c.current] > timeout]:
                index, conn.current = conn.current, -1
                self._finish(index, TIMEOUT)
                self.busy.discard(conn)
                if conn.transport:
                    conn.transport.close()  # its answer, if it ever comes, belongs to no one

    async def _report(self) -> None:
        assert self.progress is not None
        while True:
            self.progress(self.finished, self.plan.total)
            await asyncio.sleep(0.25)


def run(url: str, plan: Plan, progress: Callable[[int, int], None] | None = None) -> Outcome:
    """Send `plan` to `url` (its path is the base path); block until every request is answered or
    timed out."""
    return asyncio.run(_start(Target.parse(url), plan, progress))


async def _start(target: Target, plan: Plan, progress: Callable[[int, int], None] | None) -> Outcome:
    return await _Run(target, plan, progress).go()
