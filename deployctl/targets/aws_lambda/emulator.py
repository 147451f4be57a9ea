"""A local stand-in for AWS Lambda and API Gateway: run a function package the way Lambda runs it.

One file, two roles, standard library only, so that it can itself run inside the clean interpreter
a Lambda package is tested with:

- `worker` is the execution environment: `python -I -S -B emulator.py worker DIR HANDLER` imports the
  handler with sys.path = [DIR] + the standard library (DIR plays /var/task; -B because /var/task is
  read-only on Lambda, so nothing is compiled to disk there), then answers one event per line on
  stdin with the handler's result, as Lambda's runtime API does. Its first line reports the init.
- `gateway` is an HTTP server that turns each request into an API Gateway event (payload 2.0 as HTTP
  APIs and function URLs send, or 1.0 as REST APIs send), invokes a worker, and turns the handler's
  answer into the HTTP response API Gateway would give.

deployctl imports this module for `Invoker` and the event builders; generated packages never do.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

WORKER_FILE = os.path.abspath(__file__)
ACCOUNT = "123456789012"
API_ID = "local"
MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway's request payload limit
TEXT_TYPES = ("application/json", "text/", "application/xml", "application/x-www-form-urlencoded")
# Passed through to the function so that a local run can reach S3 (or an S3 stand-in) the way the
# deployed function would with its execution role.
PASSTHROUGH = ("HOME", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
# The AWS SDK that Lambda's Python runtimes provide; the first two are required, the rest are
# their dependencies where the installed versions still need them.
SDK_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


# -- events and context ---------------------------------------------------------------------------


def _now() -> tuple[str, int]:
    now = time.time()
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), int(now * 1000)


def _body_field(body: bytes, headers: dict[str, str], base64_body: bool | None) -> tuple[str | None, bool]:
    """API Gateway passes text bodies as they are and base64-encodes everything else."""
    if not body:
        return None, False
    if base64_body is None:
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        base64_body = not any(ctype.lower().startswith(t) for t in TEXT_TYPES)
    if base64_body:
        return base64.b64encode(body).decode(), True
    return body.decode("utf-8", errors="replace"), False


def v2_event(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    stage: str = "$default",
    query: str = "",
    route_key: str = "$default",
    base64_body: bool | None = None,
) -> dict[str, Any]:
    """An HTTP API (or function URL) event, payload format 2.0: lower-case headers, rawPath.

    On a named stage rawPath starts with the stage (`/prod/predict`), as API Gateway sends it.
    """
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    headers.setdefault("host", f"{API_ID}.execute-api.us-east-1.amazonaws.com")
    headers.setdefault("x-forwarded-proto", "https")
    text, is_b64 = _body_field(body, headers, base64_body)
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    when, epoch = _now()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": headers["host"],
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex[:16] + "=",
            "routeKey": route_key,
            "stage": stage,
            "time": when,
            "timeEpoch": epoch,
        },
        "isBase64Encoded": is_b64,
    }
    if query:
        event["queryStringParameters"] = dict(p.partition("=")[::2] for p in query.split("&") if p)
    if text is not None:
        event["body"] = text
    return event


def v1_event(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    stage: str = "prod",
    base64_body: bool | None = None,
) -> dict[str, Any]:
    """A REST API proxy event, payload format 1.0: `path` without the stage, headers as sent."""
    headers = dict(headers or {})
    headers.setdefault("Host", f"{API_ID}.execute-api.us-east-1.amazonaws.com")
    headers.setdefault("X-Forwarded-Proto", "https")
    text, is_b64 = _body_field(body, headers, base64_body)
    when, epoch = _now()
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "resourceId": "local",
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "")},
            "protocol": "HTTP/1.1",
            "requestTime": when,
            "requestTimeEpoch": epoch,
            "domainName": headers["Host"],
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


class LambdaContext:
    """The context object Lambda's Python runtime passes as the handler's second argument."""

    def __init__(self, request_id: str, deadline_ms: int, function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = None
        self.identity = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


# -- worker: the execution environment, run in the clean interpreter -------------------------------


def _rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _error(exc: BaseException) -> dict[str, Any]:
    import traceback

    return {
        "ok": False,
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


def worker_main(package: str, handler_spec: str, runtime_paths: list[str], list_modules: bool) -> int:
    # The protocol gets its own copy of stdout; the handler's prints go to stderr, as to CloudWatch.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.path[:0] = [package]
    sys.path.extend(runtime_paths)  # what the Lambda runtime itself provides (boto3), after the package
    os.chdir(package)
    module_name, _, function_name = handler_spec.rpartition(".")
    started = time.perf_counter()
    try:
        import importlib

        function = getattr(importlib.import_module(module_name), function_name)
    except BaseException as exc:  # report any init failure, as Lambda's Runtime.ImportModuleError
        proto.write(json.dumps({**_error(exc), "ready": False}) + "\n")
        return 1
    info: dict[str, Any] = {"ready": True, "init_ms": round((time.perf_counter() - started) * 1000, 1)}
    info.update(python=sys.version.split()[0], rss_mb=_rss_mb())
    if list_modules:  # what the init imported: the build precompiles exactly these
        info["modules"] = sorted(
            {f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))}
        )
    proto.write(json.dumps(info) + "\n")
    _answer_events(function, proto)
    return 0


def _answer_events(function: Any, proto: IO[str]) -> None:
    """One JSON request per stdin line -> one JSON reply per line, until stdin closes."""
    region, name = os.environ.get("AWS_REGION"), os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{name}"
    for line in sys.stdin:
        request = json.loads(line)
        context = LambdaContext(request["request_id"], request["deadline_ms"], arn)
        started = time.perf_counter()
        try:
            text = json.dumps({"ok": True, "result": function(request["event"], context)})
        except Exception as exc:  # raised, or a result that JSON cannot carry (Runtime.MarshalError)
            text = json.dumps(_error(exc))
        reply = json.loads(text)
        reply.update(ms=round((time.perf_counter() - started) * 1000, 2), rss_mb=_rss_mb())
        proto.write(json.dumps(reply) + "\n")


# -- invoker: drives a worker from another process -------------------------------------------------


class InitFailed(RuntimeError):
    """The handler module could not be imported (Lambda reports this as an init error)."""


@dataclass
class Function:
    """What the function's configuration gives the execution environment."""

    name: str = "function"
    runtime: str = "python3.12"
    handler: str = "handler.handler"
    memory_mb: int = 1024
    timeout_s: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    runtime_paths: list[str] = field(default_factory=list)

    def environment(self, package: Path, tmp: Path) -> dict[str, str]:
        """Lambda's reserved variables plus the function's own, nothing else from this shell.
        `tmp` plays /tmp, which each execution environment has to itself."""
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        # the runtime's capture settings given to `deployctl serve` play the function's configured ones
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "CAPTURE")) or k in PASSTHROUGH}
        env.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            TMPDIR=str(tmp),
            LANG="en_US.UTF-8",
            TZ=":UTC",
            LAMBDA_TASK_ROOT=str(package),
            _HANDLER=self.handler,
            AWS_REGION=region,
            AWS_DEFAULT_REGION=region,
            AWS_EXECUTION_ENV=f"AWS_Lambda_{self.runtime}",
            AWS_LAMBDA_FUNCTION_NAME=self.name,
            AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(self.memory_mb),
            AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{self.name}",
            AWS_LAMBDA_LOG_STREAM_NAME=time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
        )
        env.update(self.env)
        return env


class Invoker:
    """One execution environment: a worker process in a clean interpreter, one event at a time."""

    def __init__(
        self,
        package: Path,
        python: str,
        function: Function,
        *,
        stderr: IO[Any] | int | None = None,
        init_timeout: float = 120.0,
        list_modules: bool = False,
    ) -> None:
        self.function = function
        self.tmp = Path(tempfile.mkdtemp(prefix="lambda-tmp-"))
        cmd = [python, "-I", "-S", "-B", WORKER_FILE, "worker", *(["--list-modules"] if list_modules else [])]
        self.proc = subprocess.Popen(
            [*cmd, str(package), function.handler, *function.runtime_paths],
            cwd=package,
            env=function.environment(package, self.tmp),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        started = time.perf_counter()
        self.info = self._reply(init_timeout)
        self.startup_ms = (time.perf_counter() - started) * 1000  # interpreter start + init
        if not self.info.get("ready"):
            self.close()
            trace = "".join(self.info.get("stackTrace") or [])
            raise InitFailed(f"{self.info.get('errorType')}: {self.info.get('errorMessage')}\n{trace}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # EOF: the worker is gone

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            return {
                "ok": False,
                "ready": False,
                "errorType": "Timeout",
                "errorMessage": f"no answer in {timeout} s",
            }
        if not line:
            code = self.proc.wait()
            return {
                "ok": False,
                "ready": False,
                "errorType": "Runtime.ExitError",
                "errorMessage": f"exit {code}",
            }
        return dict(json.loads(line))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def invoke(self, event: Any) -> dict[str, Any]:
        """{"ok": True, "result": ...} or {"ok": False, "errorType": ..., "errorMessage": ...}."""
        if not self.alive():
            return {"ok": False, "errorType": "Runtime.ExitError", "errorMessage": "the worker exited"}
        deadline = int((time.time() + self.function.timeout_s) * 1000)
        request = {"event": event, "request_id": str(uuid.uuid4()), "deadline_ms": deadline}
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            return {"ok": False, "errorType": "Runtime.ExitError", "errorMessage": str(exc)}
        return self._reply(self.function.timeout_s)

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def prepare(zip_path: Path, root: Path, provide_sdk: bool = False) -> tuple[Path, list[str]]:
    """Unpack the zip into root/task (playing /var/task) and, if asked, lend this environment's
    boto3 as the SDK the Lambda runtime provides. Returns (task dir, runtime paths)."""
    task = root / "task"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(task)
    if not provide_sdk:
        return task, []
    sdk = root / "runtime"
    sdk.mkdir()
    for name in SDK_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            if name in SDK_MODULES[:2]:
                raise ModuleNotFoundError(f"{name} is not installed here, so it cannot stand in for Lambda's")
            continue
        source = Path(spec.origin)
        source = source.parent if spec.submodule_search_locations else source
        (sdk / source.name).symlink_to(source)
    return task, [str(sdk)]


# -- gateway: HTTP in front of a worker ------------------------------------------------------------


def http_response(reply: dict[str, Any], payload: str) -> tuple[int, dict[str, str], bytes]:
    """What API Gateway answers for a handler's reply, per payload format version."""
    if not reply.get("ok"):
        if reply.get("errorType") == "Timeout":
            return 503 if payload == "2.0" else 504, {}, b'{"message":"Endpoint request timed out"}'
        return 500 if payload == "2.0" else 502, {}, b'{"message":"Internal Server Error"}'
    result = reply["result"]
    if not (isinstance(result, dict) and "statusCode" in result):
        if payload == "1.0":  # a REST API needs the proxy response shape
            return 502, {}, b'{"message":"Internal server error"}'
        # payload 2.0 infers a 200 JSON answer from any other value
        body = result if isinstance(result, str) else json.dumps(result)
        return 200, {"content-type": "application/json"}, body.encode()
    headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = ", ".join(map(str, values))
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    return int(result["statusCode"]), headers, data


class Gateway(ThreadingHTTPServer):
    """Serves HTTP; one worker handles one event at a time, as one Lambda execution environment."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        package: Path,
        python: str,
        function: Function,
        payload: str,
        stage: str = "",
    ):
        super().__init__(address, _GatewayHandler)
        self.package, self.python, self.function, self.payload = package, python, function, payload
        self.stage = stage  # "": served at the root ($default); else under /<stage>
        self.lock = threading.Lock()
        self.invoker = self.start_worker()

    def start_worker(self) -> Invoker:
        invoker = Invoker(self.package, self.python, self.function)
        print(
            f"init: {invoker.startup_ms:.0f} ms (handler import {invoker.info['init_ms']:.0f} ms), "
            f"Python {invoker.info['python']}, peak RSS {invoker.info['rss_mb']} MB",
            file=sys.stderr,
            flush=True,
        )
        return invoker

    def call(self, event: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if not self.invoker.alive():  # a crashed environment is replaced, with a new cold start
                self.invoker.close()
                self.invoker = self.start_worker()
            reply = self.invoker.invoke(event)
            if reply.get("errorType") == "Timeout":
                self.invoker.close()
            return reply


class _GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_PAYLOAD:
            self._send(413, {}, b'{"message":"Request Entity Too Large"}')
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = dict(self.headers.items())
        stage = self.server.stage
        if stage:  # a named stage is the first path segment of the URL, as API Gateway serves it
            if path != f"/{stage}" and not path.startswith(f"/{stage}/"):
                # what each API answers outside its stages: HTTP API 404, REST API 403
                if self.server.payload == "2.0":
                    self._send(404, {}, b'{"message":"Not Found"}')
                else:
                    self._send(403, {}, b'{"message":"Forbidden"}')
                return
            path = path[len(stage) + 1 :] or "/"
        if self.server.payload == "1.0":
            event = v1_event(self.command, path, body, headers, stage=stage or "prod")
        else:
            event = v2_event(self.command, path, body, headers, query=query, stage=stage or "$default")
        started = time.perf_counter()
        reply = self.server.call(event)
        status, out_headers, data = http_response(reply, self.server.payload)
        if not reply.get("ok"):
            print(f"function error: {reply.get('errorType')}: {reply.get('errorMessage')}", file=sys.stderr)
            print("".join(reply.get("stackTrace") or []), file=sys.stderr, flush=True)
        self._send(status, out_headers, data)
        ms = (time.perf_counter() - started) * 1000
        print(f"{self.command} {path} {status} {ms:.1f} ms", file=sys.stderr, flush=True)

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        headers.setdefault("content-type", "application/json")
        for key, value in headers.items():
            if key not in ("content-length", "connection"):
                self.send_header(key, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:  # one line per request is printed above
        pass


def gateway_main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="lambda-"))
    # SIGTERM (from `deployctl serve` or the smoke test) must still remove the unpacked package.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        package, runtime_paths = prepare(Path(args.zip), root, args.provide_sdk)
        env = dict(item.split("=", 1) for item in args.env)
        function = Function(
            args.name, args.runtime, args.handler, args.memory, args.timeout, env, runtime_paths
        )
        try:
            server = Gateway((args.host, args.port), package, args.python, function, args.payload, args.stage)
        except InitFailed as exc:
            print(f"The function failed to initialise: {exc}", file=sys.stderr, flush=True)
            return 1
        print(
            f"API Gateway (payload {args.payload}) on http://{args.host}:{args.port}/{args.stage}",
            file=sys.stderr,
            flush=True,
        )
        try:
            server.serve_forever()
        finally:
            server.invoker.close()
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="role", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("package")
    worker.add_argument("handler")
    worker.add_argument("runtime_paths", nargs="*")
    worker.add_argument("--list-modules", action="store_true")
    gateway = sub.add_parser("gateway")
    gateway.add_argument("--zip", required=True)
    gateway.add_argument("--python", required=True)
    gateway.add_argument("--port", type=int, required=True)
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--payload", choices=("1.0", "2.0"), default="2.0")
    gateway.add_argument("--stage", default="", help="serve under /STAGE, as a named API Gateway stage")
    gateway.add_argument("--name", default="function")
    gateway.add_argument("--runtime", default="python3.12")
    gateway.add_argument("--handler", default="handler.handler")
    gateway.add_argument("--memory", type=int, default=1024)
    gateway.add_argument("--timeout", type=float, default=30.0)
    gateway.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    gateway.add_argument("--provide-sdk", action="store_true", help="lend boto3, as the runtime provides it")
    args = parser.parse_args(argv)
    if args.role == "worker":
        return worker_main(args.package, args.handler, args.runtime_paths, args.list_modules)
    return gateway_main(args)


if __name__ == "__main__":
    sys.exit(main())
