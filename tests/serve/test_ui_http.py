"""The page's files and the model routes it added (GET /v1/models/{id}/details and /graph), over plain
HTTP against a real server: tiny chat and embeddings models, and one model that cannot load."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from onnxkit.inspect import inspect_model
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server
from onnxkit.view import rendering


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("broken")
    (folder / "model.onnx").write_bytes(b"this is not an onnx model")
    return folder


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tiny_embed_model: Path, broken_model: Path) -> Iterator[Server]:
    models = [
        ModelSpec("tiny-chat", tiny_chat_model),
        ModelSpec("tiny-embed", tiny_embed_model),
        ModelSpec("broken", broken_model),
    ]
    with Server(models, port=0) as s:
        yield s


def get(server: Server, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_page_is_served_with_its_security_headers(server: Server) -> None:
    for path in ("/ui", "/ui/"):
        r = get(server, path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/js/app.js">' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    again = get(server, "/ui", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert httpx.head(server.url + "/ui/ui.css").status_code == 200


def _references(path: str, text: str) -> list[str]:
    """What an HTML, CSS or JS file asks the browser to load: src/href attributes, url(), imports."""
    suffix = Path(path).suffix
    if suffix == ".html":
        return re.findall(r'(?:src|href)="([^"#][^"]*)"', text)
    if suffix == ".css":
        return re.findall(r"url\(([^)]+)\)", text) + re.findall(r"@import\s+\"([^\"]+)\"", text)
    if suffix == ".js":
        return re.findall(r'^import .*?from\s*"([^"]+)"', text, re.M) + re.findall(r"import\(([^)]+)\)", text)
    return []


def test_every_file_the_page_loads_comes_from_the_server(server: Server) -> None:
    seen: set[str] = set()
    todo = ["/ui/index.html"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        r = get(server, path)
        assert r.status_code == 200, path
        expected = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
        assert r.headers["content-type"].startswith(expected[Path(path).suffix]), path
        for ref in _references(path, r.text):
            if ref.startswith("./"):  # ES module imports are relative to the importing file
                ref = str(Path(path).parent / ref[2:])
            assert ref.startswith("/"), f"{path} loads {ref} from outside the server"
            if ref.startswith("/ui/"):
                todo.append(ref)
    assert {"/ui/js/app.js", "/ui/js/chat.js", "/ui/ui.css", "/ui/favicon.svg"} <= seen
    total = sum(len(get(server, p).content) for p in seen)
    assert total < 150_000, f"the page's own files weigh {total} bytes"


def test_only_the_pages_files_are_served(server: Server) -> None:
    for path in ("/ui/nothing.js", "/ui/js/../../ui_http.py", "/ui/%2e%2e/ui_http.py", "/ui/%2e%2e/%2e%2e/errors.py"):
        r = get(server, path)
        assert r.status_code == 404, path
        assert "docs/ui.md" in r.json()["error"]["message"] or "no route" in r.json()["error"]["message"]


def test_root_points_to_the_page(server: Server) -> None:
    r = get(server, "/")
    assert r.json()["links"]["ui"] == "/ui" and r.json()["server"] == "onnxkit"
    page = get(server, "/", headers={"accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html") and 'href="/ui"' in page.text


def test_details_of_an_embeddings_model(server: Server, tiny_embed_model: Path) -> None:
    body = get(server, "/v1/models/tiny-embed/details").json()
    report = inspect_model(tiny_embed_model)
    assert body["object"] == "model.details" and body["id"] == "tiny-embed" and body["task"] == "embeddings"
    assert body["versions"] == [{"version": "1", "state": "READY", "reason": None}] and body["version"] == "1"
    inspected = body["inspect"]
    assert inspected["path"] == "model.onnx"  # never the server's own file system path
    assert inspected["schema"] == "onnxkit.inspect/1"
    assert inspected["parameters"] == report["parameters"] and inspected["opset_imports"] == report["opset_imports"]
    assert [i["name"] for i in inspected["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert inspected["inputs"][0]["dtype"] == "int64" and inspected["outputs"][0]["shape"][1] == 32
    assert inspected["card"]["file"] == "onnxkit.json" and inspected["card"]["task"] == "pooling"
    assert "parity" in inspected["card"] and body["inspect_error"] is None


def test_details_of_a_chat_model(server: Server) -> None:
    body = get(server, "/v1/models/tiny-chat/details").json()
    assert body["task"] == "chat" and body["ready"] is True
    assert body["inspect"]["path"] == "model.onnx"
    assert "input_ids" in [i["name"] for i in body["inspect"]["inputs"]]
    assert body["inspect"]["parameters"]["count"] > 0
    assert body["inspect"]["card"]["file"] in ("onnxkit.json", "genai_config.json")


def test_a_model_that_failed_shows_why(server: Server) -> None:
    body = get(server, "/v1/models/broken/details").json()
    assert body["ready"] is False
    [version] = body["versions"]
    assert version["state"] == "UNAVAILABLE" and version["reason"]
    assert body["inspect"] is None and "cannot read its ONNX file" in body["inspect_error"]
    r = get(server, "/v1/models/broken/graph")
    assert r.status_code == 503
    assert "model 'broken' version 1: cannot read its ONNX file" in r.json()["error"]["message"]


def test_unknown_model_or_version_is_a_404_naming_what_exists(server: Server) -> None:
    r = get(server, "/v1/models/nope/details")
    assert r.status_code == 404 and "served models:" in r.json()["error"]["message"]
    r = get(server, "/v1/models/tiny-embed/graph", params={"version": "7"})
    assert r.status_code == 404 and "versions: 1" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "version"


def test_graph_is_what_onnxkit_view_draws(server: Server, tiny_embed_model: Path) -> None:
    expected = rendering(tiny_embed_model, ".svg")
    r = get(server, "/v1/models/tiny-embed/graph", headers={"accept-encoding": "identity"})
    assert r.headers["content-type"] == "image/svg+xml" and "content-encoding" not in r.headers
    assert r.text == expected
    packed = get(server, "/v1/models/tiny-embed/graph", params={"version": "1"}, headers={"accept-encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip" and packed.text == expected  # httpx inflates it
    assert int(packed.headers["content-length"]) < len(expected) / 4


def test_openai_retrieve_is_not_swallowed(server: Server) -> None:
    assert get(server, "/v1/models/tiny-embed").json()["id"] == "tiny-embed"
    paths = get(server, "/openapi.json").json()["paths"]
    assert "/v1/models/{model_id}/details" in paths and "/v1/models/{model_id}/graph" in paths


def test_with_an_api_key_the_page_loads_and_the_api_does_not(tiny_embed_model: Path) -> None:
    with Server([ModelSpec("tiny-embed", tiny_embed_model)], port=0, api_key="sesame") as s:
        for path in ("/", "/ui", "/ui/", "/ui/js/app.js", "/ui/ui.css"):
            assert get(s, path).status_code == 200, path
        for path in ("/v1/models/tiny-embed/details", "/v1/models/tiny-embed/graph", "/uix"):
            r = get(s, path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
        key = {"authorization": "Bearer sesame"}
        assert get(s, "/v1/models/tiny-embed/details", headers=key).json()["id"] == "tiny-embed"


def test_an_unknown_query_parameter_is_refused(server: Server) -> None:
    r = get(server, "/v1/models/tiny-embed/graph", params={"format": "dot"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "format"
    assert "only ?version=V" in r.json()["error"]["message"]
