"""The requests of the soak (bench_soak.py): good and bad ones over every protocol the server speaks.

Each scenario sends one request (or one burst) with a real client: the openai SDK, httpx, a raw
socket, tritonclient.grpc. It returns what happened as an ``Outcome``: ``ok`` (2xx), ``4xx``,
``5xx``, ``dropped`` (the server closed the connection or the stream without a complete answer),
``timeout`` (no answer within the client's timeout: a hang), or ``left`` (the client disconnected on
purpose, as the scenario says). Bad requests come from issue 10's classes: malformed JSON, wrong
types, oversize inputs, absurd shapes, lone surrogates, clients that leave mid-request, and bursts
that should be answered 429.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
import openai
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from onnxkit.serve._proto import grpc_service_pb2 as pb
from onnxkit.serve._proto.grpc_service_pb2_grpc import GRPCInferenceServiceStub

TIMEOUT_S = 300.0  # longer than any good request takes on a loaded 2-core machine: past it, a hang
MLP_IN, MLP_OUT = 16, 4
WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "rain", "fell", "over", "quiet", "hills", "and",
         "distant", "towns", "under", "grey", "skies", "quantum", "computers", "use", "qubits", "to", "represent"]
GRPC_CLIENT_ERRORS = {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.OUT_OF_RANGE",
                      "StatusCode.FAILED_PRECONDITION", "StatusCode.RESOURCE_EXHAUSTED",
                      "StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED", "StatusCode.CANCELLED"}


@dataclass
class Outcome:
    scenario: str
    good: bool  # a request that must succeed (or meet a 429 under load)
    kind: str  # ok | 4xx | 5xx | dropped | timeout | left
    status: int | str | None = None
    detail: str = ""  # what was sent and what came back, for the report


@dataclass
class Target:
    url: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    chat: str
    embed: str
    tensor: str = "mlp"
    classifier: str | None = None


@dataclass
class Client:
    """One soak client's connections (one per thread: none of them is shared)."""

    target: Target
    rng: random.Random
    http: httpx.Client = field(init=False)
    oai: openai.OpenAI = field(init=False)
    grpc: grpcclient.InferenceServerClient = field(init=False)
    channel: grpc.Channel = field(init=False)
    stub: GRPCInferenceServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.target.url, timeout=TIMEOUT_S)
        self.oai = openai.OpenAI(base_url=self.target.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)
        self.grpc = grpcclient.InferenceServerClient(self.target.grpc)
        self.channel = grpc.insecure_channel(self.target.grpc, options=[("grpc.max_send_message_length", 64 << 20)])
        self.stub = GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.http.close()
        self.oai.close()
        self.grpc.close()
        self.channel.close()

    def text(self, words: int = 12) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(2, words)))


def _excerpt(text: str | bytes, limit: int = 300) -> str:
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return s if len(s) <= limit else s[:limit] + "..."


def post(c: Client, name: str, good: bool, path: str, *, body: Any = None, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> Outcome:
    """One POST with httpx; ``content`` is sent as is (a malformed body), else ``body`` as JSON."""
    sent = _excerpt(content if content is not None else json.dumps(body), 200)
    data = content if content is not None else json.dumps(body).encode()
    try:
        r = c.http.post(path, content=data, headers={"content-type": "application/json", **(headers or {})})
    except httpx.TimeoutException as exc:
        return Outcome(name, good, "timeout", None, f"POST {path} {sent} -> {type(exc).__name__}")
    except httpx.TransportError as exc:
        return Outcome(name, good, "dropped", None, f"POST {path} {sent} -> {type(exc).__name__}: {exc}")
    return Outcome(name, good, classify(r.status_code), r.status_code, f"POST {path} {sent} -> {_excerpt(r.content)}")


def classify(status: int) -> str:
    return "ok" if status < 400 else "4xx" if status < 500 else "5xx"


def sdk(name: str, good: bool, what: str, call: Callable[[], object]) -> Outcome:
    try:
        call()
    except openai.APITimeoutError:
        return Outcome(name, good, "timeout", None, what)
    except openai.APIStatusError as exc:
        return Outcome(name, good, classify(exc.status_code), exc.status_code, f"{what} -> {_excerpt(str(exc.body))}")
    except openai.APIConnectionError as exc:
        return Outcome(name, good, "dropped", None, f"{what} -> {exc.__cause__!r}")
    except openai.APIError as exc:  # an error event inside a stream
        return Outcome(name, good, "5xx", "stream-error", f"{what} -> {_excerpt(str(exc))}")
    return Outcome(name, good, "ok", 200, what)


# -- good requests --------------------------------------------------------------------------------------
def chat(c: Client) -> Outcome:
    msgs = [{"role": "user", "content": c.text()}]
    return sdk("chat", True, f"chat {msgs}", lambda: c.oai.chat.completions.create(
        model=c.target.chat, messages=msgs, max_tokens=8, temperature=0.7))  # type: ignore[arg-type]


def chat_stream(c: Client) -> Outcome:
    msgs = [{"role": "user", "content": c.text()}]

    def run() -> None:
        stream = c.oai.chat.completions.create(model=c.target.chat, messages=msgs, max_tokens=8,  # type: ignore[arg-type]
                                               stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        if not chunks or chunks[-1].usage is None:
            raise openai.APIError("the stream ended without its usage chunk", request=None, body=None)  # type: ignore[arg-type]

    return sdk("chat-stream", True, f"chat stream {msgs}", run)


def completion(c: Client) -> Outcome:
    prompt = c.text()
    return sdk("completions", True, f"completions {prompt!r}", lambda: c.oai.completions.create(
        model=c.target.chat, prompt=prompt, max_tokens=8))


def embeddings(c: Client) -> Outcome:
    texts = [c.text(40) for _ in range(c.rng.randint(1, 8))]
    return sdk("embeddings", True, f"embeddings {len(texts)} texts", lambda: c.oai.embeddings.create(
        model=c.target.embed, input=texts))


def classify_texts(c: Client) -> Outcome:
    return post(c, "classify", True, "/v1/classify", body={"model": c.target.classifier, "input": [c.text(), c.text()]})


def _mlp_rows(c: Client) -> np.ndarray:
    return np.asarray([[c.rng.random() for _ in range(MLP_IN)] for _ in range(c.rng.randint(1, 4))], np.float32)


def kserve_json(c: Client) -> Outcome:
    x = _mlp_rows(c)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    return post(c, "kserve-json", True, f"/v2/models/{c.target.tensor}/infer", body=body)


def kserve_binary(c: Client) -> Outcome:
    x = _mlp_rows(c)
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    headers = {"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"}
    return post(c, "kserve-binary", True, f"/v2/models/{c.target.tensor}/infer", content=header + x.tobytes(),
                headers=headers)


def _grpc(c: Client, name: str, good: bool, inputs: list[grpcclient.InferInput], what: str,
          parameters: dict[str, Any] | None = None, model: str | None = None) -> Outcome:
    try:
        c.grpc.infer(model or c.target.tensor, inputs, parameters=parameters, client_timeout=TIMEOUT_S)
    except InferenceServerException as exc:
        code = str(exc.status())
        if code == "StatusCode.DEADLINE_EXCEEDED":
            return Outcome(name, good, "timeout", code, what)
        kind = "4xx" if code in GRPC_CLIENT_ERRORS else "dropped" if code == "StatusCode.UNAVAILABLE" else "5xx"
        return Outcome(name, good, kind, code, f"{what} -> {_excerpt(exc.message() or '')}")
    return Outcome(name, good, "ok", "OK", what)


def kserve_grpc(c: Client) -> Outcome:
    x = _mlp_rows(c)
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return _grpc(c, "kserve-grpc", True, [inp], f"gRPC ModelInfer x{list(x.shape)}")


def tfserving(c: Client) -> Outcome:
    return post(c, "tfserving", True, f"/v1/models/{c.target.tensor}:predict",
                body={"instances": _mlp_rows(c).tolist()})


# -- bad requests ---------------------------------------------------------------------------------------
def malformed_json(c: Client) -> Outcome:
    path = c.rng.choice(["/v1/embeddings", "/v1/chat/completions", "/v1/completions",
                         f"/v2/models/{c.target.tensor}/infer", f"/v1/models/{c.target.tensor}:predict"])
    content = c.rng.choice([b'{"input": "unterminated', b"[1, 2", b"\xff\xfe not utf-8", b"", b"{}" * 1000,
                            b'{"messages": [' * 5000])
    return post(c, "bad:malformed-json", False, path, content=content)


def wrong_types(c: Client) -> Outcome:
    m, t = c.target, c.target.tensor
    x = {"name": "x", "datatype": "FP32", "shape": [1, MLP_IN], "data": [0.5] * MLP_IN}
    path, body = c.rng.choice([
        ("/v1/embeddings", {"model": m.embed, "input": 7}),
        ("/v1/embeddings", {"model": m.embed, "input": [[1, 2], "mixed"]}),
        ("/v1/embeddings", {"model": m.embed, "input": "x", "encoding_format": "hex"}),
        ("/v1/chat/completions", {"model": m.chat, "messages": "hi"}),
        ("/v1/chat/completions", {"model": m.chat, "messages": [{"role": "user", "content": "hi"}],
                                  "temperature": "hot"}),
        ("/v1/completions", {"model": m.chat, "prompt": "", "max_tokens": 4}),
        ("/v1/completions", {"model": m.chat, "prompt": "hi", "max_tokens": 4, "top_k": 99999999999}),
        ("/v1/completions", {"model": m.chat, "prompt": "hi", "max_tokens": 4, "seed": -5}),
        ("/v1/completions", {"model": m.chat, "prompt": "hi", "max_tokens": 4, "top_p": 7}),
        (f"/v2/models/{t}/infer", {"inputs": [{**x, "datatype": ["FP32"]}]}),
        (f"/v2/models/{t}/infer", {"inputs": [{**x, "shape": "1x16"}]}),
        (f"/v2/models/{t}/infer", {"inputs": [x], "outputs": [{"name": "y", "parameters": {"classification": "two"}}]}),
        (f"/v2/models/{t}/infer", {"inputs": [{**x, "data": ["a"] * MLP_IN}]}),
        (f"/v2/models/{t}/infer", {"inputs": [{**x, "datatype": "BYTES", "data": ["@@@"] * MLP_IN}]}),
        (f"/v1/models/{t}:predict", {"instances": [[1, 2], [1, 2, 3]]}),  # ragged
        (f"/v1/models/{t}:predict", {"instances": "nope"}),
        (f"/v1/models/{t}:predict", {"inputs": {"x": [[{"b64": "!!!"}] * MLP_IN]}}),
    ])
    return post(c, "bad:wrong-types", False, path, body=body)


def absurd_shapes(c: Client) -> Outcome:
    t = c.target.tensor
    x = {"name": "x", "datatype": "FP32", "data": [0.5] * MLP_IN}
    shape = c.rng.choice([[1, 10**12], [2**63, 1], [-1, MLP_IN], [1] * 65, [0, MLP_IN], [1, MLP_IN + 1], [4, MLP_IN]])
    if c.rng.random() < 0.5:
        return post(c, "bad:absurd-shape", False, f"/v2/models/{t}/infer", body={"inputs": [{**x, "shape": shape}]})
    request = pb.ModelInferRequest(model_name=t)
    request.inputs.add(name="x", datatype="FP32", shape=[min(d, 2**63 - 1) for d in shape])  # int64 on the wire
    request.raw_input_contents.append(np.ones(MLP_IN, np.float32).tobytes())  # the shape lies about the data
    return raw_grpc(c, "bad:absurd-shape", request, f"gRPC ModelInfer shape {shape} with {MLP_IN} values")


def raw_grpc(c: Client, name: str, request: pb.ModelInferRequest, what: str) -> Outcome:
    """A ModelInfer tritonclient would refuse to build, sent through the generated stub."""
    try:
        c.stub.ModelInfer(request, timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        code = str(exc.code())
        if code == "StatusCode.DEADLINE_EXCEEDED":
            return Outcome(name, False, "timeout", code, what)
        kind = "4xx" if code in GRPC_CLIENT_ERRORS else "dropped" if code == "StatusCode.UNAVAILABLE" else "5xx"
        return Outcome(name, False, kind, code, f"{what} -> {_excerpt(exc.details() or '')}")
    return Outcome(name, False, "ok", "OK", what)


def grpc_bad_parameters(c: Client) -> Outcome:
    t = c.target.tensor
    request = pb.ModelInferRequest(model_name=t)
    request.inputs.add(name="x", datatype="FP32", shape=[1, MLP_IN])
    choice = c.rng.randrange(4)
    if choice == 0:
        request.raw_input_contents.append(np.ones(MLP_IN, np.float32).tobytes())
        request.outputs.add(name="y").parameters["classification"].string_param = "two"
        what = "classification 'two'"
    elif choice == 1:
        request.inputs[0].datatype = "BYTES"
        request.inputs[0].shape[:] = [1, 1]
        request.raw_input_contents.append(struct.pack("<I", 6 << 20) + b"x" * (6 << 20))
        what = "a 6 MiB BYTES element for an FP32 input"
    elif choice == 2:
        request.raw_input_contents.append(b"\x00" * 7)  # not a whole number of FP32 values
        what = "7 raw bytes for FP32 [1, 16]"
    else:
        request.model_name = "no-such-model"
        request.raw_input_contents.append(np.ones(MLP_IN, np.float32).tobytes())
        what = "an unknown model"
    return raw_grpc(c, "bad:grpc", request, f"gRPC ModelInfer with {what}")


def oversize(c: Client) -> Outcome:
    choice = c.rng.randrange(4)
    if choice == 0:
        texts = ["a few words"] * 5000
        return post(c, "bad:oversize", False, "/v1/embeddings", body={"model": c.target.embed, "input": texts})
    if choice == 1:
        body = {"model": c.target.chat, "prompt": ["Once upon a time"] * 4, "n": 16, "max_tokens": 8}
        return post(c, "bad:oversize", False, "/v1/completions", body=body)
    if choice == 2:  # a body past the 8 MiB limit, with its length announced
        return post(c, "bad:oversize", False, "/v1/embeddings", content=b'{"input": "' + b"a" * (9 << 20) + b'"}')

    def chunks() -> Any:  # the same, chunked: no length announced
        yield b'{"input": "'
        for _ in range(9):
            yield b"a" * (1 << 20)
        yield b'"}'

    try:
        r = c.http.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    except httpx.TimeoutException:
        return Outcome("bad:oversize", False, "timeout", None, "chunked 9 MiB body")
    except httpx.TransportError as exc:
        return Outcome("bad:oversize", False, "dropped", None, f"chunked 9 MiB body -> {type(exc).__name__}: {exc}")
    detail = f"chunked 9 MiB body -> {_excerpt(r.content)}"
    return Outcome("bad:oversize", False, classify(r.status_code), r.status_code, detail)


def surrogates_and_ids(c: Client) -> Outcome:
    m = c.target
    path, content = c.rng.choice([
        ("/v1/embeddings", b'{"model": "%s", "input": "lone \\ud800 surrogate"}' % m.embed.encode()),
        ("/v1/embeddings", b'{"model": "%s", "input": ["fine", "\\udfff"]}' % m.embed.encode()),
        ("/v1/embeddings", b'{"model": "%s", "input": [[101, 99999999999999999999]]}' % m.embed.encode()),
        ("/v1/embeddings", b'{"model": "%s", "input": [[101, 9999999]]}' % m.embed.encode()),
        ("/v1/chat/completions", b'{"model": "%s", "max_tokens": 4, "messages": [{"role": "user", '
                                 b'"content": "\\ud83d"}]}' % m.chat.encode()),
        ("/v1/completions", b'{"model": "%s", "max_tokens": 4, "prompt": "x\\udc00"}' % m.chat.encode()),
    ])
    return post(c, "bad:surrogate-or-token-id", False, path, content=content)


def leave_mid_request(c: Client) -> Outcome:
    """Clients that go away: mid-body, right after sending, and after the first streamed chunk."""
    host, port = c.target.url.removeprefix("http://").rsplit(":", 1)
    choice = c.rng.randrange(3)
    if choice == 2:
        try:
            with c.http.stream("POST", "/v1/chat/completions", json={
                    "model": c.target.chat, "stream": True, "max_tokens": 64,
                    "messages": [{"role": "user", "content": c.text()}]}) as r:
                if r.status_code >= 500:
                    detail = "chat stream: " + _excerpt(r.read())
                    return Outcome("bad:client-leaves", False, "5xx", r.status_code, detail)
                next(r.iter_lines(), None)
        except httpx.TimeoutException:
            return Outcome("bad:client-leaves", False, "timeout", None, "chat stream, left after one chunk")
        except httpx.TransportError as exc:
            return Outcome("bad:client-leaves", False, "dropped", None, f"chat stream before the first chunk: {exc!r}")
        return Outcome("bad:client-leaves", False, "left", None, "chat stream, left after one chunk")
    body = json.dumps({"model": c.target.embed, "input": [c.text(60) for _ in range(64)]}).encode()
    head = (f"POST /v1/embeddings HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + (body[: len(body) // 3] if choice == 0 else body))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    return Outcome("bad:client-leaves", False, "left", None, ["mid-body", "after sending 64 texts"][choice])


def burst_429(c: Client) -> Outcome:
    """40 completions with n=8 at once: past the engine's queue, so some must be 429, none 5xx."""

    async def fire() -> list[Outcome]:
        async with httpx.AsyncClient(base_url=c.target.url, timeout=TIMEOUT_S) as client:
            body = {"model": c.target.chat, "prompt": "Tell me", "n": 8, "max_tokens": 4}

            async def one() -> Outcome:
                try:
                    r = await client.post("/v1/completions", json=body)
                except httpx.TimeoutException:
                    return Outcome("bad:burst", False, "timeout", None, "burst completion n=8")
                except httpx.TransportError as exc:
                    return Outcome("bad:burst", False, "dropped", None, f"burst completion n=8 -> {exc!r}")
                return Outcome("bad:burst", False, classify(r.status_code), r.status_code,
                               f"burst completion n=8 -> {_excerpt(r.content)}")

            return list(await asyncio.gather(*(one() for _ in range(40))))

    outcomes = asyncio.run(fire())
    worst = next((o for o in outcomes if o.kind in ("5xx", "dropped", "timeout")), None)
    if worst is not None:
        return worst
    statuses = sorted({str(o.status) for o in outcomes})
    return Outcome("bad:burst", False, "4xx" if "429" in statuses else "ok", ",".join(statuses), "burst of 40 x n=8")


GOOD: list[tuple[Callable[[Client], Outcome], float]] = [
    (chat, 3), (chat_stream, 3), (completion, 3), (embeddings, 6), (kserve_json, 6), (kserve_binary, 6),
    (kserve_grpc, 6), (tfserving, 6),
]
BAD: list[tuple[Callable[[Client], Outcome], float]] = [
    (malformed_json, 4), (wrong_types, 6), (absurd_shapes, 4), (grpc_bad_parameters, 3), (oversize, 1),
    (surrogates_and_ids, 3), (leave_mid_request, 3), (burst_429, 0.3),
]


def scenarios(target: Target) -> tuple[list[Callable[[Client], Outcome]], list[float]]:
    table = GOOD + BAD + ([(classify_texts, 4)] if target.classifier else [])
    return [f for f, _ in table], [w for _, w in table]
