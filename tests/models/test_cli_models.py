from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from supply_helpers import FileServer, sha, tar_gz_bytes, tiny_onnx

from onnxkit.cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ONNXKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _models(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def test_pull_url_then_models_lists_it(
    server: FileServer, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tiny_onnx()
    url = server.serve("/files/adder.onnx", body)
    assert main(["pull", "-q", url, "--sha256", sha(body)]) == 0
    assert "adder: pulled (tensor" in capsys.readouterr().out

    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "TASK", "SIZE", "SOURCE"]
    assert table[1].split()[:2] == ["adder", "tensor"] and table[1].endswith(url)

    [row] = _models(capsys)
    assert row["name"] == "adder" and row["source"] == url and row["size"] == len(body)
    assert Path(str(row["path"])).parent == home / "models"

    assert main(["pull", url]) == 0
    assert "adder: already cached" in capsys.readouterr().out
    assert len(server.state.requests) == 1


def test_checksum_mismatch_adds_nothing(
    server: FileServer, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/bad.tar.gz", tar_gz_bytes({"model.onnx": tiny_onnx()}))
    assert main(["pull", "-q", url, "--sha256", "1" * 64]) == 1
    err = capsys.readouterr().err
    assert f"onnxkit pull: {url}: sha256 mismatch: expected {'1' * 64}, got " in err
    assert _models(capsys) == []
    assert main(["models"]) == 0
    assert capsys.readouterr().out.startswith("no models in ")


def test_several_specs_with_name_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "a", "b", "--name", "x"]) == 1
    assert "--sha256 and --name apply to one SPEC; got 2" in capsys.readouterr().err


def test_catalog_listing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--catalog", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["name"], r["task"]) for r in rows} == {
        ("smollm2-135m-instruct", "chat"),
        ("smollm2-135m-instruct-int4", "chat"),
        ("all-minilm-l6-v2", "embeddings"),
    }


def test_module_entry_point(server: FileServer, home: Path) -> None:
    url = server.serve("/m.onnx", tiny_onnx())
    env_run = [sys.executable, "-m", "onnxkit"]
    pulled = subprocess.run([*env_run, "pull", "-q", url], capture_output=True, text=True, check=False)
    assert pulled.returncode == 0, pulled.stderr
    listed = subprocess.run([*env_run, "models"], capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines()[1].startswith("m ")


def test_hub_without_network_fails_fast(home: Path) -> None:
    # A fresh process without HF_HUB_OFFLINE (the suite sets it) really tries the network.
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "onnxkit", "pull", "hf:onnxkit-tests/no-such-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert proc.returncode == 1
    assert proc.stderr.startswith("onnxkit pull: cannot pull hf:onnxkit-tests/no-such-model: ")
    assert "Hugging Face hub" in proc.stderr
