"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for tests, scripted per request.

Behaviours, chosen by the script (one entry consumed per request, the last repeats): ``ok``,
``429`` (with Retry-After), ``500``, ``hang`` (sleeps past the client's time-out), ``malformed``,
``length`` (the reply cut by max_tokens: ``finish_reason: "length"``). ``GET /v1/models`` lists
``models`` (as vLLM's server does: id, root, parent) and is counted in ``model_lists``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedServer:
    def __init__(self, script: list[str], reply: str = "1. a red circle\n2. a blue square",
                 models: list[dict[str, Any]] | None = None) -> None:
        self.script, self.reply = list(script), reply
        self.models = models if models is not None else [
            {"id": name, "object": "model", "created": 0, "owned_by": "vllm", "root": f"/weights/{name}", "parent": None}
            for name in ("test-llm", "gpt-4o")]
        self.model_lists = 0
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with server.lock:
                    server.model_lists += 1
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": server.models})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    action = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                if action == "429":
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.05"})
                elif action == "500":
                    self._send(500, {"error": {"message": "boom"}})
                elif action == "hang":
                    time.sleep(1.5)
                    self._send(200, server._completion(body))
                elif action == "malformed":
                    self._raw(200, b'{"choices": [ this is not json')
                elif action == "length":
                    self._send(200, server._completion(body, "length"))
                else:
                    self._send(200, server._completion(body))

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._raw(status, json.dumps(payload).encode(), headers)

            def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _completion(self, body: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": self.reply}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
