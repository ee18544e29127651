"""`onnxkit predict -o FILE` resumes an interrupted run from FILE.partial (serve/predict_partial.py).

Real `python -m onnxkit predict` processes, killed part way. `--max-batch-size 1` runs each text
alone, so an answer does not depend on the lines batched with it and two runs are comparable byte for
byte (in padded batches the last float digit may differ between any two runs).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LINES = 1200
TIMEOUT = 300


def command(model: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "onnxkit", "predict", str(model), "-i", str(src), "-o", str(out), "-q",
            "--max-batch-size", "1", *extra]


def predict(model: Path, src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(model, src, out, *extra), capture_output=True, text=True, timeout=TIMEOUT)


def write_input(path: Path) -> Path:
    """Plain bodies, Batch API lines (their ids carry input line numbers), bad lines and blank lines."""
    rows = []
    for i in range(LINES):
        text = f"sentence {i} about {'cats' if i % 3 else 'the weather today'}"
        if i % 97 == 5:
            rows.append("{not json")
        elif i % 101 == 7:
            rows.append("")
        if i % 4 == 0:
            rows.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/embeddings",
                                    "body": {"input": text, "encoding_format": "float"}}))
        else:
            rows.append(json.dumps({"input": [text, text.upper()]}))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(tiny_embed_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """The input and what an uninterrupted run writes for it."""
    folder = tmp_path_factory.mktemp("predict-partial")
    src = write_input(folder / "in.jsonl")
    done = predict(tiny_embed_model, src, folder / "reference.jsonl")
    assert done.returncode == 1, done.stderr  # the lines that are not JSON failed
    assert not (folder / "reference.jsonl.partial").exists()
    assert not (folder / "reference.jsonl.partial.json").exists()
    return src, (folder / "reference.jsonl").read_bytes()


def start_and_stop(model: Path, src: Path, out: Path, sig: signal.Signals, after: int = 50) -> subprocess.Popen[str]:
    """Starts a run and sends ``sig`` once its partial holds ``after`` lines."""
    proc = subprocess.Popen(command(model, src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = out.with_name(out.name + ".partial")
    deadline = time.monotonic() + TIMEOUT
    while not (partial.exists() and partial.read_bytes().count(b"\n") >= after):
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "the run wrote nothing"
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.wait(timeout=TIMEOUT)
    return proc


def test_a_killed_run_resumes_to_the_uninterrupted_runs_bytes(
    tiny_embed_model: Path, reference: tuple[Path, bytes], tmp_path: Path
) -> None:
    src, want = reference
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    start_and_stop(tiny_embed_model, src, out, signal.SIGKILL)
    kept = partial.read_bytes()
    count = kept.count(b"\n")
    assert 50 <= count < len(want.splitlines())
    assert want.startswith(kept)  # whole lines, in input order: no torn line even under SIGKILL
    with partial.open("ab") as f:
        f.write(b'{"object":"list","da')  # as if the machine had gone down in the middle of a line
    done = predict(tiny_embed_model, src, out)
    assert done.returncode == 1, done.stderr
    assert f"resuming {partial}: {count} answers kept; a torn last line (20 bytes) dropped" in done.stderr
    assert out.read_bytes() == want
    assert not partial.exists() and not (tmp_path / "out.jsonl.partial.json").exists()
    total, failed = len(want.splitlines()), src.read_text().count("{not json")
    assert f"{total - failed} ok, {failed} failed ({count} resumed from out.jsonl.partial)" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_the_run_and_it_resumes(
    tiny_embed_model: Path, reference: tuple[Path, bytes], tmp_path: Path, sig: signal.Signals
) -> None:
    src, want = reference
    out = tmp_path / "out.jsonl"
    proc = start_and_stop(tiny_embed_model, src, out, sig)
    _, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    kept = (tmp_path / "out.jsonl.partial").read_bytes()
    count = kept.count(b"\n")
    assert f"interrupted; {count} answers are in {out}.partial" in stderr
    assert want.startswith(kept) and kept.endswith(b"\n")
    done = predict(tiny_embed_model, src, out)
    assert out.read_bytes() == want, done.stderr


def test_a_changed_input_is_refused_until_restart(
    tiny_embed_model: Path, reference: tuple[Path, bytes], tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(reference[0].read_bytes())
    out = tmp_path / "out.jsonl"
    start_and_stop(tiny_embed_model, src, out, signal.SIGKILL)
    kept = (tmp_path / "out.jsonl.partial").read_bytes()
    with src.open("a") as f:
        f.write('{"input": "a new last line"}\n')
    refused = predict(tiny_embed_model, src, out)
    assert refused.returncode == 1
    assert "resuming would mix answers to two different inputs; run with --restart" in refused.stderr
    assert "bytes, mtime_ns, head_sha256 changed" in refused.stderr
    assert (tmp_path / "out.jsonl.partial").read_bytes() == kept  # refused: nothing touched
    done = predict(tiny_embed_model, src, out, "--restart")
    assert "resuming" not in done.stderr
    got = out.read_bytes().splitlines()
    assert len(got) == len(reference[1].splitlines()) + 1
    assert got[:-1] == reference[1].splitlines() and json.loads(got[-1])["object"] == "list"


def test_a_partial_from_another_model_is_refused(tiny_embed_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.partial").write_text('{"object":"list"}\n')
    refused = predict(tiny_embed_model, src, out)
    assert refused.returncode == 1 and "does not (another program" in refused.stderr
    assert "--restart" in refused.stderr
    record = {"format": 1, "model": "other", "model_path": "/nowhere"}
    (tmp_path / "out.jsonl.partial.json").write_text(json.dumps(record))
    refused = predict(tiny_embed_model, src, out)
    assert refused.returncode == 1 and "holds answers from model 'other' (/nowhere)" in refused.stderr


def test_standard_output_has_no_partial(tiny_embed_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    done = subprocess.run(command(tiny_embed_model, src, Path("-")), capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["object"] for x in done.stdout.splitlines()] == ["list", "list"]
    assert list(tmp_path.iterdir()) == [src]  # no file named "-", no partial
    refused = subprocess.run([*command(tiny_embed_model, src, Path("-")), "--restart"], capture_output=True,
                             text=True, timeout=TIMEOUT)
    assert refused.returncode == 1 and "--restart applies to --output FILE" in refused.stderr
