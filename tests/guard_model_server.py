"""A served guard model for tests: vLLM's OpenAI-compatible routes on loopback, answering with the recorded
outputs of tests/data/guard_model_outputs.json (no guard model's weights can run here).

    python tests/guard_model_server.py FAMILY PORT

Bodies follow vLLM's protocol (vllm/entrypoints/openai/protocol.py: ChatCompletionResponse, ErrorResponse):
200 with choices[].message.content; 404 NotFoundError for a model it does not serve; 400 BadRequestError for
a prompt it has no recording of.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECORDED = json.loads((Path(__file__).parent / "data" / "guard_model_outputs.json").read_text())
FAMILY, PORT = sys.argv[1], int(sys.argv[2])
MODEL = {"llama_guard_3": "meta-llama/Llama-Guard-3-8B", "shieldgemma": "google/shieldgemma-2b",
         "granite_guardian": "ibm-granite/granite-guardian-3.1-2b"}[FAMILY]
REQUESTS: list[dict] = []


def answer(content: str) -> str | None:
    if FAMILY == "shieldgemma":
        q = re.search(r"Human Question: (.*)\n", content)
        policy = re.search(r'\* "([^"]+)"', content)
        by_policy = RECORDED[FAMILY].get(q.group(1).strip()) if q else None
        return by_policy.get(policy.group(1)) if by_policy and policy else None
    return RECORDED[FAMILY].get(content.strip())


def error(status: int, kind: str, message: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "vllm"}]})
        elif self.path == "/requests":  # what the test asks: every chat request body received
            self._send(200, {"requests": REQUESTS})
        else:
            self._send(404, error(404, "NotFoundError", f"Not Found: {self.path}"))

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            self._send(404, error(404, "NotFoundError", f"Not Found: {self.path}"))
            return
        REQUESTS.append(body)
        if body.get("model") != MODEL:
            self._send(404, error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist."))
            return
        text = answer(body["messages"][-1]["content"])
        if text is None:
            self._send(400, error(400, "BadRequestError", "no recorded answer for this prompt"))
            return
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text, "reasoning_content": None,
                                                 "tool_calls": []},
                         "logprobs": None, "finish_reason": "stop", "stop_reason": None}
                        for i in range(body.get("n", 1))],
            "usage": {"prompt_tokens": 64, "total_tokens": 70, "completion_tokens": 6}, "prompt_logprobs": None})


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
