"""The RayService manifest's Serve config (docs/kuberay/onnxkit-rayservice.yaml), run by ``serve run`` locally.

No Kubernetes here: the test runs the manifest's ``serveConfigV2`` applications verbatim on the
session's two-node cluster, with the proxy on loopback instead of 0.0.0.0:8000, and the cluster's
model cache holding the default models as the manifest's volume does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from cluster_fixtures import RayCluster

MANIFEST = Path(__file__).parents[2] / "docs" / "kuberay" / "onnxkit-rayservice.yaml"
SERVE = str(Path(sys.executable).with_name("serve"))


def serve_config(port: int) -> dict[str, object]:
    manifest = yaml.safe_load(MANIFEST.read_text())
    config: dict[str, object] = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    # Both nodes are this machine: one proxy, on loopback; the applications stay as written.
    config.update(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    return config


@pytest.mark.integration
def test_the_rayservice_serve_config_serves_onnxkit(
    ray_cluster: RayCluster, default_model: Callable[[str], Path], tmp_path: Path
) -> None:
    config = serve_config(ray_cluster.serve_port)
    for name in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        link = ray_cluster.home / "models" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(default_model(name))
    path = tmp_path / "serve-config.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{ray_cluster.serve_port}"
    log = tmp_path / "serve-run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SERVE, "run", str(path), "--address", ray_cluster.address], env=ray_cluster.env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=10).status_code == 200:
                    break
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail(f"the Serve config was not ready in 300 s:\n{log.read_text()[-3000:]}")
        health = httpx.get(url + "/health", timeout=10).json()
        assert health["replicas"] == {"RUNNING": 2}
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16, temperature=0,
        )
        assert "Paris" in (reply.choices[0].message.content or "")
        vectors = client.embeddings.create(model="all-minilm-l6-v2", input=["a sentence", "another one"])
        assert [len(v.embedding) for v in vectors.data] == [384, 384]
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)  # serve run deletes its application on Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # serve run shuts Serve down only when its Ctrl-C handler runs to the end: make sure
        ray_cluster.shutdown_serve()
