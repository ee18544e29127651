"""onnxkit export from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxkit.cli import main


def test_export_command_writes_card(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        ["export", str(tiny_bert_dir), "--task", "text-classification", "-o", str(out), "--opset", "14"]
    )
    assert code == 0
    card = json.loads((out / "onnxkit.json").read_text())
    assert card["opset"] == 14 and card["task"] == "text-classification"
    assert set(card["versions"]) >= {"torch", "transformers", "onnx", "onnxruntime"}
    assert "parity" in capsys.readouterr().out


def test_export_command_json(tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", str(tiny_bert_dir), "--task", "pooling", "-o", str(tmp_path / "o"), "--pooling", "cls"]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pooling"] == "cls"


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "missing"), "--task", "pooling", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onnxkit export: source") and "catalog name" in err
    assert main(["export", "hf:someone/some-model", "--task", "pooling", "-o", str(tmp_path / "o")]) == 1
    assert "not reachable" in capsys.readouterr().err
    assert (
        main(["export", str(tmp_path), "--task", "pooling", "-o", str(tmp_path / "o"), "--opset", "9"]) == 1
    )
    assert "too old" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
