"""Issue 2's targets, as ratios measured in one run (models must be cached: `make models`).

- /v1/embeddings, 16 concurrent clients × 32 real sentences vs raw onnxruntime at batch 32, length-sorted
  (tokenization included, same thread count); arrival order reported too.
- chat single-stream decode tokens/s and time to first token vs a raw onnxruntime-genai Generator loop.
- 8 concurrent chat streams vs onnxruntime-genai's own Engine in-process on the same 8 requests.
- start-up time to ready, and RSS with both default models loaded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from sentences import sentences

from onnxkit.models.cache import Cache
from onnxkit.settings import default_home
from onnxkit.tasks.text_batch import plan_chunks

CHAT, EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"
PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rainbows form.",
           "List some tips for learning a new language.", "Describe the water cycle.",
           "What makes a good cup of tea?", "Explain what a compiler does.",
           "Describe a walk through a forest in autumn.", "Why is the sky blue?"]
NEW_TOKENS = 128


def path(name: str) -> Path:
    found = Cache(default_home()).get(name)
    if found is None:
        raise SystemExit(f"{name} is not cached: run `onnxkit pull {name}`")
    return found.path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- raw baselines --------------------------------------------------------------


def raw_embeddings(texts: list[str], order: str) -> float:
    """Raw onnxruntime on all texts at once: ``arrival`` order or length-``sorted`` in chunks of 32, or
    ``planned``: sorted and cut by the server's own chunk planner (at most 32 rows a chunk)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    folder = path(EMBED)
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()  # tokenizer.json may pad every text to the maximum; pad per batch instead
    names = {i.name for i in sess.get_inputs()}

    def run_all() -> None:
        encs = tok.encode_batch(texts)
        ids = [e.ids for e in encs]
        idx = sorted(range(len(ids)), key=lambda i: len(ids[i])) if order != "arrival" else list(range(len(ids)))
        if order == "planned":
            ends = plan_chunks([len(ids[i]) for i in idx], 32)
        else:
            ends = [min(len(idx), s + 32) for s in range(0, len(idx), 32)]
        for begin, end in zip([0, *ends], ends, strict=False):
            chunk = [ids[i] for i in idx[begin:end]]
            width = max(map(len, chunk))
            x = np.zeros((len(chunk), width), np.int64)
            m = np.zeros_like(x)
            for r, seq in enumerate(chunk):
                x[r, : len(seq)] = seq
                m[r, : len(seq)] = 1
            feeds = {"input_ids": x, "attention_mask": m}
            if "token_type_ids" in names:
                feeds["token_type_ids"] = np.zeros_like(x)
            sess.run(None, feeds)

    run_all()
    best = 0.0
    for _ in range(5):  # best round, as for the server
        t = time.perf_counter()
        run_all()
        best = max(best, len(texts) / (time.perf_counter() - t))
    return best


def raw_generator(prompt_ids: list[int]) -> tuple[float, float]:
    import onnxruntime_genai as og

    model = og.Model(str(path(CHAT)))
    best = (0.0, 1e9)
    for _ in range(3):
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(prompt_ids) + NEW_TOKENS)
        g = og.Generator(model, params)
        t0 = time.perf_counter()
        g.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        g.generate_next_token()
        first = time.perf_counter()
        n = 0
        while not g.is_done() and n < NEW_TOKENS - 1:
            g.generate_next_token()
            n += 1
        rate = n / (time.perf_counter() - first)
        best = (max(best[0], rate), min(best[1], first - t0))
        del g
    return best


def raw_engine(prompts: list[list[int]], max_batch: int) -> float:
    import onnxruntime_genai as og

    config = og.Config(str(path(CHAT)))
    config.overlay(json.dumps({"engine": {"static_batching": {"max_batch_size": max_batch}}}))
    model = og.Model(config)

    def once() -> float:
        engine = og.Engine(model)
        buf = engine.create_event_buffer(256)
        reqs = []
        t = time.perf_counter()
        for p in prompts:
            opts = og.RequestOptions()
            opts.set_max_session_tokens(len(p) + NEW_TOKENS)
            r = engine.create_request(options=opts)
            to = og.TurnOptions(r)
            to.set_max_generated_tokens(NEW_TOKENS)
            to.set_do_sample(False)
            to.set_temperature(0.0)
            r.begin_turn(np.asarray(p, dtype=np.int32), to)
            reqs.append(r)
        tokens = 0
        while engine.has_pending_requests():
            for ev in engine.run(buf):
                if int(ev.flags) & int(og.EngineEventFlags.TOKEN):
                    tokens += 1
        return tokens / (time.perf_counter() - t)

    once()
    return max(once() for _ in range(2))


# ---- the server -----------------------------------------------------------------


def start_server(port: int) -> tuple[subprocess.Popen[bytes], float]:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "onnxkit", "serve", CHAT, EMBED, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, time.perf_counter() - t
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        time.sleep(0.05)


async def server_embeddings(url: str, texts: list[str], seconds: float = 8.0) -> float:
    """16 clients in a closed loop, each sending its 32 sentences again as soon as it has its answer."""
    chunks = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=32)) as c:

        async def one(batch: list[str]) -> None:
            r = await c.post(url + "/v1/embeddings", json={"model": EMBED, "input": batch, "encoding_format": "base64"})
            r.raise_for_status()

        await asyncio.gather(*(one(b) for b in chunks))  # warm-up
        done = 0
        stop = time.perf_counter() + seconds

        async def client(batch: list[str]) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await one(batch)
                done += len(batch)

        t = time.perf_counter()
        await asyncio.gather(*(client(b) for b in chunks))
        return done / (time.perf_counter() - t)


async def server_stream(c: httpx.AsyncClient, url: str, prompt: str) -> tuple[int, float, float, float]:
    body = {"model": CHAT, "messages": [{"role": "user", "content": prompt}], "max_tokens": NEW_TOKENS,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "min_tokens": NEW_TOKENS}
    t0 = time.perf_counter()
    first = None
    tokens = 0
    async with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    assert first is not None
    return tokens, first - t0, end - first, end - t0


async def server_chat(url: str, prompt: str, concurrent: list[str]) -> tuple[float, float, float]:
    async with httpx.AsyncClient(timeout=300) as c:
        await server_stream(c, url, prompt)
        best_rate, best_ttft = 0.0, 1e9
        for _ in range(3):
            tokens, ttft, rest, _ = await server_stream(c, url, prompt)
            best_rate = max(best_rate, (tokens - 1) / rest)
            best_ttft = min(best_ttft, ttft)
        aggregate = 0.0
        for _ in range(2):
            t = time.perf_counter()
            results = await asyncio.gather(*(server_stream(c, url, p) for p in concurrent))
            aggregate = max(aggregate, sum(r[0] for r in results) / (time.perf_counter() - t))
    return best_rate, best_ttft, aggregate


def main() -> None:
    import onnxruntime_genai as og

    texts = sentences(512)
    tok = og.Tokenizer(og.Model(str(path(CHAT))))
    chat_ids = [[int(t) for t in tok.encode(tok.apply_chat_template(json.dumps([{"role": "user", "content": p}]),
                                                                     add_generation_prompt=True))]
                for p in PROMPTS]

    print(f"embeddings: {len(texts)} sentences, mean {np.mean([len(t.split()) for t in texts]):.1f} words")
    raw_arrival = raw_embeddings(texts, "arrival")
    raw_rate, raw_ttft = raw_generator(chat_ids[0])
    raw_eng = raw_engine(chat_ids, max_batch=8)

    port = free_port()
    proc, ready = start_server(port)
    try:
        url = f"http://127.0.0.1:{port}"
        rss = psutil.Process(proc.pid).memory_info().rss
        # This VM's speed drifts by +-10% between runs: alternate raw and served, keep each one's best.
        raw_sorted = raw_planned = served = 0.0
        for _ in range(3):
            raw_sorted = max(raw_sorted, raw_embeddings(texts, "sorted"))
            raw_planned = max(raw_planned, raw_embeddings(texts, "planned"))
            served = max(served, asyncio.run(server_embeddings(url, texts, seconds=5.0)))
        rate, ttft, aggregate = asyncio.run(server_chat(url, PROMPTS[0], PROMPTS))
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"raw onnxruntime, batch 32, length-sorted: {raw_sorted:8.1f} sentences/s")
    print(f"raw onnxruntime, batch 32, arrival order: {raw_arrival:8.1f} sentences/s")
    print(f"raw onnxruntime, server's chunk plan:     {raw_planned:8.1f} sentences/s")
    print(f"server /v1/embeddings, 16 clients x 32:   {served:8.1f} sentences/s  "
          f"ratio vs sorted {served / raw_sorted:.2f} (target >= 0.9), vs arrival {served / raw_arrival:.2f}, "
          f"vs the same plan in-process {served / raw_planned:.2f}")
    print(f"raw genai Generator decode:               {raw_rate:8.1f} tokens/s, first token {raw_ttft * 1e3:.1f} ms")
    print(f"server single stream decode:              {rate:8.1f} tokens/s  ratio {rate / raw_rate:.2f} "
          f"(target >= 0.95); first token {ttft * 1e3:.1f} ms, overhead {(ttft - raw_ttft) * 1e3:+.1f} ms "
          f"(target <= 15)")
    print(f"raw genai Engine, 8 requests:             {raw_eng:8.1f} tokens/s")
    print(f"server, 8 concurrent streams:             {aggregate:8.1f} tokens/s  ratio {aggregate / raw_eng:.2f} "
          f"(target >= 0.9); {aggregate / rate:.2f}x a single stream")
    print(f"ready after {ready:.2f} s (target <= 5); RSS {rss / 2**20:.0f} MiB (target <= 1229)")



if __name__ == "__main__":
    main()
