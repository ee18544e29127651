from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from supply_helpers import FileServer, sha, tar_gz_bytes, zip_bytes

from onnxkit.errors import ChecksumMismatch, InvalidRequest, SupplyError
from onnxkit.models.fetch import download, extract_archive, partial_path

BODY = os.urandom(3 * (1 << 20) + 12345)  # several chunks, not a round number


def test_download_whole_file(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/blob.bin", BODY)
    out = download(url, tmp_path / "out" / "blob.bin", scratch_dir=tmp_path / "scratch", progress=False)
    assert out.read_bytes() == BODY
    assert server.ranges("/blob.bin") == [None]
    assert not partial_path(url, tmp_path / "scratch").exists()


def test_interrupted_download_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/blob.bin", BODY)
    server.state.cut_after["/blob.bin"] = 1_000_000
    out = download(url, tmp_path / "blob.bin", sha256=sha(BODY), scratch_dir=tmp_path / "s", progress=False)
    assert sha(out.read_bytes()) == sha(BODY)
    assert server.ranges("/blob.bin") == [None, "bytes=1000000-"]


def test_resume_across_calls(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/blob.bin", BODY)
    server.state.cut_after["/blob.bin"] = 500_000
    scratch = tmp_path / "s"
    with pytest.raises(SupplyError, match="run the same command again to resume"):
        download(url, tmp_path / "blob.bin", scratch_dir=scratch, retries=0, progress=False)
    assert not (tmp_path / "blob.bin").exists()
    assert partial_path(url, scratch).stat().st_size == 500_000
    out = download(url, tmp_path / "blob.bin", scratch_dir=scratch, progress=False)
    assert out.read_bytes() == BODY
    assert server.ranges("/blob.bin") == [None, "bytes=500000-"]


def test_server_ignoring_range_restarts(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/blob.bin", BODY)
    server.state.cut_after["/blob.bin"] = 700_000
    server.state.ignore_range = True
    out = download(url, tmp_path / "blob.bin", scratch_dir=tmp_path / "s", progress=False)
    assert out.read_bytes() == BODY  # a 200 answer to a Range request rewrote the partial from 0
    assert server.ranges("/blob.bin") == [None, "bytes=700000-"]


def test_complete_partial_is_not_downloaded_again(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/blob.bin", BODY)
    scratch = tmp_path / "s"
    scratch.mkdir()
    partial_path(url, scratch).write_bytes(BODY)  # e.g. a crash between the last byte and the rename
    out = download(url, tmp_path / "blob.bin", sha256=sha(BODY), scratch_dir=scratch, progress=False)
    assert out.read_bytes() == BODY
    assert server.ranges("/blob.bin") == [f"bytes={len(BODY)}-"]


def test_checksum_mismatch_discards_the_download(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/blob.bin", BODY)
    scratch = tmp_path / "s"
    with pytest.raises(ChecksumMismatch) as info:
        download(url, tmp_path / "blob.bin", sha256="0" * 64, scratch_dir=scratch, progress=False)
    assert "0" * 64 in info.value.message and sha(BODY) in info.value.message
    assert not (tmp_path / "blob.bin").exists()
    assert list(scratch.iterdir()) == []


def test_bad_sha256_argument_is_refused_before_downloading(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/blob.bin", BODY)
    with pytest.raises(InvalidRequest, match="64 hex digits"):
        download(url, tmp_path / "b", sha256="abc", scratch_dir=tmp_path / "s", progress=False)
    assert server.state.requests == []


def test_404_is_a_clear_error(server: FileServer, tmp_path: Path) -> None:
    url = server.url("/missing.onnx")
    with pytest.raises(SupplyError, match=r"answered 404 .*check the URL"):
        download(url, tmp_path / "x.onnx", scratch_dir=tmp_path / "s", progress=False)


def test_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SupplyError, match=re.escape("cannot download http://127.0.0.1:9/x.onnx")):
        download("http://127.0.0.1:9/x.onnx", tmp_path / "x", scratch_dir=tmp_path / "s", progress=False)


def test_extract_zip_and_tar_gz(tmp_path: Path) -> None:
    files = {"m/model.onnx": b"onnx", "m/tokenizer/tokenizer.json": b"{}"}
    for kind, data in (("zip", zip_bytes(files)), ("tar.gz", tar_gz_bytes(files))):
        archive = tmp_path / f"a.{kind}"
        archive.write_bytes(data)
        root = extract_archive(archive, tmp_path / kind)
        assert root == tmp_path / kind / "m"  # one top-level folder is the model folder
        assert (root / "tokenizer" / "tokenizer.json").read_bytes() == b"{}"


@pytest.mark.parametrize("member", ["../evil.onnx", "/abs/evil.onnx", "a/../../evil.onnx"])
def test_zip_path_traversal_is_refused(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "bad.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.onnx", b"x")
        zf.writestr(zipfile.ZipInfo(member), b"evil")
    archive.write_bytes(buf.getvalue())
    with pytest.raises(SupplyError, match="points outside the model folder"):
        extract_archive(archive, tmp_path / "out" / "x")
    assert not list(tmp_path.rglob("evil.onnx"))


def test_tar_traversal_and_links_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(tar_gz_bytes({"../evil.onnx": b"evil"}))
    with pytest.raises(SupplyError, match="points outside the model folder"):
        extract_archive(archive, tmp_path / "out")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        link = tarfile.TarInfo("model.onnx")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    archive.write_bytes(buf.getvalue())
    with pytest.raises(SupplyError, match="is a link"):
        extract_archive(archive, tmp_path / "out2")
    assert not list(tmp_path.rglob("evil.onnx"))
