"""Build the held-out sentences that judge quantized exports (src/onnxkit/export/data/heldout.txt).

    .venv/bin/python scripts/make_heldout.py [--check]

The quantization recipe is tuned on everyday English (export/samples.py, tests/export/data/
sentences.txt) and on the standard library's docstrings (bench/sentences.py). The held-out set comes
from none of those: prose from permissively licensed text installed with onnxkit's own dependencies
(docstrings and documentation of scikit-learn, SciPy, SymPy, NetworkX, mpmath, sentence-transformers,
httpx, Starlette, Rich, Click, Pygments, the OpenAI SDK) and from two licence texts Debian ships
(Apache-2.0, CC0-1.0). Sentences are picked by a seeded draw within each source group and length
band, never by how a model scores on them. Source files are parsed with ``ast``, not imported.

The file is committed: a rerun with other package versions draws other sentences, and ``--check``
says whether the committed file is still what this script makes here.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import random
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "onnxkit" / "export" / "data" / "heldout.txt"
SITE = Path(importlib.metadata.distribution("numpy").locate_file(""))
LICENSES = Path("/usr/share/common-licenses")
SEED = 20240611

# group -> (licence, sources); a source is a package folder in site-packages, a file, or a glob
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "law": ("Apache-2.0 / CC0-1.0 licence texts", (str(LICENSES / "Apache-2.0"), str(LICENSES / "CC0-1.0"))),
    "science": ("BSD-3-Clause", ("scipy/stats", "scipy/signal", "scipy/special", "scipy/optimize",
                                 "scipy/integrate", "scipy/spatial", "scipy/constants")),
    "maths": ("BSD-3-Clause", ("sympy/physics", "sympy/ntheory", "sympy/combinatorics", "sympy/geometry",
                               "networkx/algorithms", "mpmath")),
    "data": ("BSD-3-Clause", ("sklearn/datasets/descr", "sklearn/ensemble", "sklearn/cluster",
                              "sklearn/linear_model", "sklearn/metrics")),
    "ml": ("Apache-2.0", ("sentence_transformers",)),
    "web": ("BSD-3-Clause / Apache-2.0", ("httpx", "starlette", "openai/resources")),
    "terminal": ("MIT / BSD", ("rich", "click", "pygments/lexers")),
}
PACKAGES = ("scipy", "sympy", "networkx", "mpmath", "scikit-learn", "sentence-transformers", "httpx",
            "starlette", "openai", "rich", "click", "pygments")
BANDS = ((4, 10), (11, 24), (25, 70))  # words: short, medium, long sentences
# sentences and passages (3-6 sentences, 40-180 words) drawn per group; the licence texts hold
# only about twenty prose sentences and no prose passage, all of which are taken
QUOTAS = {"law": (20, 0), "web": (100, 8), "terminal": (100, 6)}
DEFAULT_QUOTA = (100, 15)

# Characters that mark code, markup or maths rather than prose.
NOT_PROSE = re.compile(r"[`*_=<>{}\[\]|\\#@$~^]|\.\.|::|>>>|https?:|www\.|\w\(|\(\)|\b\w+\.\w+\.\w+|\s-\w")
SPLIT = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")
SECTION = re.compile(r"^\s*([-=~^]{3,}|[A-Z][A-Za-z ]+:\s*$)")


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def _texts(source: str) -> Iterator[str]:
    path = Path(source) if source.startswith("/") else SITE / source
    if path.is_file() and path.suffix != ".py":
        yield path.read_text(encoding="utf-8")
        return
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    for file in files:
        if "tests" in file.parts or "test" in file.parts:
            continue
        if file.suffix == ".py":
            yield from _docstrings(file)
        elif file.suffix == ".rst":
            yield file.read_text(encoding="utf-8")


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        lines = textwrap.dedent(block.strip("\n")).splitlines()
        if not lines or any(SECTION.match(line) for line in lines):
            continue
        # lists, tables, code, parameter entries and indented continuations are not running prose
        if any(re.match(r"\s*([-*+•]|\d+[.)]|\(\w\)|\w+ : |>>>|\.\.)", line) for line in lines):
            continue
        if len({len(line) - len(line.lstrip()) for line in lines}) > 1:
            continue
        yield " ".join(" ".join(lines).split())


def _is_prose(sentence: str) -> bool:
    words = sentence.split()
    if not sentence.lstrip("\"'")[:1].isupper() or sentence[-1] not in ".!?" or NOT_PROSE.search(sentence):
        return False
    alpha = sum(w.strip(".,;:!?()'\"").isalpha() for w in words)
    return alpha >= 0.8 * len(words) and sentence.count("(") == sentence.count(")")


def _band(sentence: str) -> int | None:
    n = len(sentence.split())
    return next((i for i, (lo, hi) in enumerate(BANDS) if lo <= n <= hi), None)


def _excluded() -> set[str]:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    from sentences import sentences as stdlib_sentences

    from onnxkit.export.samples import SENTENCES

    tuned = [*SENTENCES, *(ROOT / "tests" / "export" / "data" / "sentences.txt").read_text().splitlines()]
    return {s.lower() for s in [*tuned, *stdlib_sentences()]}


def build() -> str:
    rng = random.Random(SEED)
    excluded = _excluded()
    seen: set[str] = set()
    picked: list[tuple[str, str]] = []
    for group, (_, sources) in GROUPS.items():
        bands: list[list[str]] = [[] for _ in BANDS]
        passages: list[str] = []
        for source in sources:
            for text in _texts(source):
                for paragraph in _paragraphs(text):
                    parts = [s for s in SPLIT.split(paragraph) if s]
                    prose = [s for s in parts if _is_prose(s)]
                    for s in prose:
                        band = _band(s)
                        if band is not None and s.lower() not in excluded and s.lower() not in seen:
                            seen.add(s.lower())
                            bands[band].append(s)
                    if len(prose) == len(parts) and 3 <= len(parts) <= 6 and 40 <= len(paragraph.split()) <= 180:
                        passages.append(paragraph)
        # equal thirds by length where the source has them (legal text has few short sentences):
        # a band short of its share gives the rest to the next band, in a seeded order
        want, passage_quota = QUOTAS.get(group, DEFAULT_QUOTA)
        total = want
        for i, band in enumerate(sorted(bands, key=len)):
            share = min(len(band), want // (len(BANDS) - i))
            picked += [(group, s) for s in rng.sample(band, share)]
            want -= share
        if want:
            raise SystemExit(f"group {group!r}: {want} sentences short of {total}")
        fresh = [p for p in dict.fromkeys(passages) if p.lower() not in seen]
        if len(fresh) < passage_quota:
            raise SystemExit(f"group {group!r}: only {len(fresh)} passages, need {passage_quota}")
        for passage in rng.sample(fresh, passage_quota):
            seen.add(passage.lower())
            picked.append((group, passage))
    rng.shuffle(picked)
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PACKAGES)
    header = [
        "# Held-out texts for onnxkit's quantization gate: made by scripts/make_heldout.py, do not edit.",
        "# Prose drawn (seeded, by source group and length band) from docstrings and docs of permissively",
        "# licensed packages and two licence texts; none from the sentences the recipe is tuned on.",
        *(f"# {group}: {licence}: {', '.join(Path(s).name if s.startswith('/') else s for s in sources)}"
          for group, (licence, sources) in GROUPS.items()),
        f"# versions: {versions}",
        f"# {len(picked)} texts: {sum(QUOTAS.get(g, DEFAULT_QUOTA)[0] for g in GROUPS)} sentences and"
        f" {sum(QUOTAS.get(g, DEFAULT_QUOTA)[1] for g in GROUPS)} passages of 3-6 sentences, one a line.",
    ]
    return "\n".join(header + [text for _, text in picked]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if the committed file differs")
    args = parser.parse_args()
    text = build()
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print("heldout.txt is current" if same else "heldout.txt differs from what this machine makes")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    texts = [line for line in text.splitlines() if not line.startswith("#")]
    print(f"wrote {OUT.relative_to(ROOT)}: {len(texts)} texts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
