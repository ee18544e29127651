"""Without --ray, nothing imports Ray: not `onnxkit serve`, not a running server, not local predict."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cluster_fixtures import free_port

RAY_IMPORT = re.compile(r"\|\s+(ray|pyarrow)(\.|$)", re.MULTILINE)  # python -X importtime's package column


def test_plain_server_and_local_predict_never_import_ray(tiny_embed_model: Path, tmp_path: Path) -> None:
    port = free_port()
    stderr = tmp_path / "server.log"
    with stderr.open("w") as out:  # a file, not a pipe: -X importtime writes more than a pipe holds
        server = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "onnxkit", "serve", str(tiny_embed_model),
                                   "--port", str(port)], stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "x"}).status_code == 200:
                    break
            assert server.poll() is None, stderr.read_text()[-2000:]
            time.sleep(0.2)
        else:
            raise AssertionError("the server did not answer within 300 s")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    log = stderr.read_text()
    assert "import time:" in log and not RAY_IMPORT.search(log), RAY_IMPORT.findall(log)
    source = tmp_path / "texts.txt"
    source.write_text("a cat\na dog\n")
    predict = subprocess.run([sys.executable, "-X", "importtime", "-m", "onnxkit", "predict", str(tiny_embed_model),
                              "-i", str(source), "-q"], capture_output=True, text=True, timeout=300, check=False)
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert not RAY_IMPORT.search(predict.stderr), RAY_IMPORT.findall(predict.stderr)
