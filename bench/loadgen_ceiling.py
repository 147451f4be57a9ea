"""The load generator's ceiling: deployctl loadtest's generator (deployctl/checks/loadgen.py) against a
trivial keep-alive server (a fixed 2-byte JSON answer), each pinned to its own core.

    python bench/loadgen_ceiling.py [RATE ...]      # default 2000 5000 7000 10000, 3 s each

Prints, per offered rate: answers, achieved rate, p50/p99/max latency (from the due time), the share
of requests the generator sent more than 10 ms late, its CPU share and whether it reports itself
`generator_limited`. The steadier figure on a shared machine is its CPU time per request.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployctl.checks import loadgen
from deployctl.process import free_port

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Trivial(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n")[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(ANSWER)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Trivial, "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        os.sched_setaffinity(0, {1})
        asyncio.run(serve(int(sys.argv[2])))
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    os.sched_setaffinity(0, {0})
    time.sleep(1.0)
    url = f"http://127.0.0.1:{port}"
    request = loadgen.encode_request(loadgen.Target.parse(url), "POST", "/predict", b'{"features": [1]}', {})
    try:
        for rate in [float(r) for r in sys.argv[1:]] or [2000.0, 5000.0, 7000.0, 10000.0]:
            o = loadgen.run(url, loadgen.Plan(lambda i: request, rate, 3.0, connections=64))
            ms = sorted((done - due) * 1000 for done, due in zip(o.done, o.due))
            ok = sum(1 for s in o.status if s == 200)
            print(
                f"{rate:>7.0f} req/s offered: {ok}/{len(ms)} answered, {ok / o.seconds:,.0f}/s achieved, "
                f"p50 {ms[len(ms) // 2]:.2f} ms, p99 {ms[int(len(ms) * 0.99)]:.2f} ms, max {ms[-1]:.1f} ms, "
                f"{o.late_share:.1%} sent late, CPU {o.cpu_seconds / o.seconds:.0%} "
                f"({o.cpu_seconds / len(ms) * 1e6:.0f} us/req), generator_limited {o.generator_limited}"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
