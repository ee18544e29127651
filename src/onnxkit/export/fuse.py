"""Tokenizer fusion: an onnxruntime-extensions tokenizer in front of the model, strings in.

The extensions' tokenizer ops take one text and return 1-D ids, so the fused graph tokenizes
text by text inside two ONNX Loops: the first finds the longest sequence, the second pads every
sequence to it and stacks them into [batch, sequence] — the same tensors as a Hugging Face
tokenizer with ``padding=True`` — and the model then runs once on the whole batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxkit.errors import InvalidRequest, MissingDependency
from onnxkit.types import JSON

TEXT_INPUT = "text"
# strings where tokenizers differ in the details; Japanese kana are left out on purpose: the
# extensions' BERT normaliser differs from Hugging Face's there (see docs/export.md)
TRICKY_TEXTS = (
    "",
    "  two  spaces  ",
    " leading space",
    "Tabs\tand\nnew lines",
    "Café, naïve, Ünïcödé, Øre, façade",
    "it's WE'LL I'D they've",
    "Numbers 12345, 3.14159 and 1,000,000",
    "Emoji 🙂 and symbols © ™ → ∞",
    "MixedCASE words and ALLCAPS",
    "Punctuation!!! ... ??? ;-) (brackets) [square] {curly}",
)
CONTRIB = "ai.onnx.contrib"


def _extensions() -> Any:
    try:
        import onnxruntime_extensions
    except ImportError as exc:
        raise MissingDependency("onnxruntime-extensions", "export") from exc
    return onnxruntime_extensions


def register_custom_ops(options: Any) -> Any:
    """Register onnxruntime-extensions' custom-op library on an ``ort.SessionOptions``."""
    options.register_custom_ops_library(_extensions().get_library_path())
    return options


def session_options(options: Any | None = None) -> Any:
    """SessionOptions able to load fused-tokenizer graphs (pass your own to extend it)."""
    import onnxruntime as ort

    return register_custom_ops(options if options is not None else ort.SessionOptions())


def needs_extensions(model: onnx.ModelProto) -> bool:
    return any(o.domain == CONTRIB for o in model.opset_import)


def tokenizer_graph(folder: Path) -> tuple[onnx.GraphProto, int, bool]:
    """The extensions' tokenizer graph for the tokenizer in ``folder``, its pad id, and whether
    its sequences end with a special token."""
    from transformers import AutoTokenizer

    from onnxkit.export.bpe import bpe_graph, is_byte_level_bpe

    ox = _extensions()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    kind = type(tokenizer).__name__
    if is_byte_level_bpe(folder):
        graph = bpe_graph(tokenizer, folder)
    else:
        try:
            pre, _ = ox.gen_processing_models(tokenizer, pre_kwargs={"CAST_TOKEN_ID": True})
        except Exception as exc:
            raise InvalidRequest(
                f"tokenizer {kind} cannot be fused by onnxruntime-extensions ({exc}); "
                "export without --fuse-tokenizer and tokenize outside the graph"
            ) from exc
        graph = pre.graph
        _match_hf_bert_options(graph, tokenizer)
    outputs = [o.name for o in graph.output]
    if len(graph.input) != 1 or "input_ids" not in outputs:
        raise InvalidRequest(
            f"tokenizer {kind}: onnxruntime-extensions made a graph with inputs "
            f"{[i.name for i in graph.input]} and outputs {outputs}; expected one string input and "
            "input_ids, so it cannot be fused; export without --fuse-tokenizer"
        )
    probe = tokenizer("probe")["input_ids"]
    keep_last = bool(probe) and probe[-1] in set(tokenizer.all_special_ids)
    return graph, int(tokenizer.pad_token_id or 0), keep_last


def _match_hf_bert_options(graph: onnx.GraphProto, tokenizer: Any) -> None:
    # Hugging Face strips accents whenever it lowercases unless told otherwise (strip_accents
    # None); the extensions' converter only copies an explicit True, which breaks "Café".
    lower = bool(getattr(tokenizer, "do_lower_case", tokenizer.init_kwargs.get("do_lower_case", False)))
    strip = tokenizer.init_kwargs.get("strip_accents")
    for node in graph.node:
        if node.op_type != "BertTokenizer":
            continue
        for attr in node.attribute:
            if attr.name == "strip_accents":
                attr.i = int(bool(strip) or (strip is None and lower))


def _body(
    tok: onnx.GraphProto, prefix: str, text: str, wanted: list[str], tail: list[onnx.NodeProto]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], dict[str, str]]:
    """Nodes that tokenize element ``{prefix}i`` of ``text``; returns (nodes, inits, name map)."""
    rename = {tok.input[0].name: f"{prefix}text1"}

    def local(name: str) -> str:
        if not name:
            return name
        if name not in rename:
            rename[name] = f"{prefix}{name}"
        return rename[name]

    nodes = [
        helper.make_node("Gather", [text, f"{prefix}i"], [f"{prefix}text0"], axis=0),
        helper.make_node("Unsqueeze", [f"{prefix}text0", f"{prefix}axis0"], [f"{prefix}text1"]),
    ]
    for node in tok.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}{node.name}"
        del copy.input[:]
        del copy.output[:]
        copy.input.extend(local(n) for n in node.input)
        copy.output.extend(local(n) for n in node.output)
        nodes.append(copy)
    inits: list[onnx.TensorProto] = []
    for init in tok.initializer:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(init)
        tensor.name = local(init.name)
        inits.append(tensor)
    inits.append(helper.make_tensor(f"{prefix}axis0", TensorProto.INT64, [1], [0]))
    names = {w: rename[w] for w in wanted if w in rename}
    return nodes + tail, inits, names


def _loops(
    tok: onnx.GraphProto, needed: list[str], pad_id: int, max_length: int, keep_last: bool
) -> list[onnx.NodeProto]:
    produced = [o.name for o in tok.output]
    missing = [n for n in needed if n not in produced and n != "attention_mask"]
    if missing:
        raise InvalidRequest(
            f"the fused tokenizer produces {produced}; the model also needs {missing}; "
            "export without --fuse-tokenizer"
        )
    bool_true = helper.make_tensor("fz_true", TensorProto.BOOL, [], [True])
    count = helper.make_node("Size", [TEXT_INPUT], ["fz_count"])
    true = helper.make_node("Constant", [], ["fz_cond"], value=bool_true)

    # Loop 1: the length of every tokenized text.
    nodes, inits, names = _body(tok, "fz1_", TEXT_INPUT, ["input_ids"], [])
    inits.append(helper.make_tensor("fz1_max", TensorProto.INT64, [1], [max_length]))
    nodes += [
        helper.make_node("Shape", [names["input_ids"]], ["fz1_full"]),
        helper.make_node("Min", ["fz1_full", "fz1_max"], ["fz1_len"]),
        helper.make_node("Identity", ["fz1_cond_in"], ["fz1_cond_out"]),
    ]
    body1 = helper.make_graph(
        nodes,
        "fz_lengths",
        [
            helper.make_tensor_value_info("fz1_i", TensorProto.INT64, []),
            helper.make_tensor_value_info("fz1_cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("fz1_cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("fz1_len", TensorProto.INT64, [1]),
        ],
        inits,
    )
    loop1 = helper.make_node("Loop", ["fz_count", "fz_cond"], ["fz_lengths"], body=body1)
    longest = helper.make_node("ReduceMax", ["fz_lengths"], ["fz_longest"], keepdims=1)  # [1, 1]

    # Loop 2: tokenize again, pad each sequence on the right to the longest, stack.
    outs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in needed]
    sources = {n: n for n in outs}
    if "attention_mask" in outs and "attention_mask" not in produced:
        sources["attention_mask"] = "input_ids"  # made below as ones, like the ids
    nodes, inits, names = _body(tok, "fz2_", TEXT_INPUT, list(set(sources.values())), [])
    inits += [
        helper.make_tensor("fz2_zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("fz2_flat", TensorProto.INT64, [1], [1]),
        helper.make_tensor("fz2_max", TensorProto.INT64, [1], [max_length]),
    ]
    if keep_last:
        inits += [
            helper.make_tensor("fz2_last", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("fz2_end", TensorProto.INT64, [1], [np.iinfo(np.int64).max]),
        ]
    # Truncation like Hugging Face's: keep the first max_length tokens, or, when the tokenizer
    # ends every sequence with a special token ([SEP]), the first max_length-1 plus that token.
    # Written branch-free so that short texts pass through unchanged.
    nodes += [
        helper.make_node("Shape", [names["input_ids"]], ["fz2_full"]),
        helper.make_node("Min", ["fz2_full", "fz2_max"], ["fz2_len"]),
        helper.make_node("Sub", ["fz2_len", "fz2_flat"], ["fz2_head_end"]),
        helper.make_node("Reshape", ["fz_longest", "fz2_flat"], ["fz2_longest"]),
        helper.make_node("Sub", ["fz2_longest", "fz2_len"], ["fz2_extra"]),
        helper.make_node("Concat", ["fz2_zero", "fz2_extra"], ["fz2_pads"], axis=0),
        helper.make_node("Identity", ["fz2_cond_in"], ["fz2_cond_out"]),
    ]
    body_outputs = [helper.make_tensor_value_info("fz2_cond_out", TensorProto.BOOL, [])]
    for name in outs:
        value = names[sources[name]]
        if name == "attention_mask" and sources[name] != name:
            nodes.append(helper.make_node("Shape", [value], ["fz2_mask_shape"]))
            nodes.append(
                helper.make_node(
                    "ConstantOfShape",
                    ["fz2_mask_shape"],
                    ["fz2_mask_raw"],
                    value=helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                )
            )
            value = "fz2_mask_raw"
        cast = f"fz2_{name}_i64"
        nodes.append(helper.make_node("Cast", [value], [f"fz2_{name}_all"], to=TensorProto.INT64))
        if keep_last:
            head, tail = f"fz2_{name}_head", f"fz2_{name}_tail"
            nodes.append(helper.make_node("Slice", [f"fz2_{name}_all", "fz2_zero", "fz2_head_end"], [head]))
            nodes.append(helper.make_node("Slice", [f"fz2_{name}_all", "fz2_last", "fz2_end"], [tail]))
            nodes.append(helper.make_node("Concat", [head, tail], [cast], axis=0))
        else:
            nodes.append(helper.make_node("Slice", [f"fz2_{name}_all", "fz2_zero", "fz2_len"], [cast]))
        fill = pad_id if name == "input_ids" else 0
        inits.append(helper.make_tensor(f"fz2_{name}_fill", TensorProto.INT64, [], [fill]))
        nodes.append(helper.make_node("Pad", [cast, "fz2_pads", f"fz2_{name}_fill"], [f"fz2_{name}_row"]))
        body_outputs.append(helper.make_tensor_value_info(f"fz2_{name}_row", TensorProto.INT64, ["L"]))
    body2 = helper.make_graph(
        nodes,
        "fz_batch",
        [
            helper.make_tensor_value_info("fz2_i", TensorProto.INT64, []),
            helper.make_tensor_value_info("fz2_cond_in", TensorProto.BOOL, []),
        ],
        body_outputs,
        inits,
    )
    loop2 = helper.make_node("Loop", ["fz_count", "fz_cond"], outs, body=body2)
    return [count, true, loop1, longest, loop2]


def tokenizer_nodes(
    model: onnx.ModelProto, tok: onnx.GraphProto, pad_id: int, max_length: int, keep_last: bool
) -> list[onnx.NodeProto]:
    init_names = {i.name for i in model.graph.initializer}
    needed = [i.name for i in model.graph.input if i.name not in init_names]
    return _loops(tok, needed, pad_id, max_length, keep_last)


def fuse_model(
    model: onnx.ModelProto, tok: onnx.GraphProto, pad_id: int, max_length: int, keep_last: bool
) -> onnx.ModelProto:
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    front = tokenizer_nodes(model, tok, pad_id, max_length, keep_last)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    del fused.graph.input[:]
    fused.graph.input.append(helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"]))
    fused.graph.input.extend(i for i in graph.input if i.name in init_names)
    nodes = list(front) + list(graph.node)
    del fused.graph.node[:]
    fused.graph.node.extend(nodes)
    if not needs_extensions(fused):
        fused.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return fused


def _front_model(model: onnx.ModelProto, front: list[onnx.NodeProto]) -> onnx.ModelProto:
    """The fused graph's tokenizer alone: strings in, the model's token inputs out."""
    init_names = {i.name for i in model.graph.initializer}
    needed = [i for i in model.graph.input if i.name not in init_names]
    graph = helper.make_graph(
        front, "fused_tokenizer", [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"])], needed
    )
    opsets = [*model.opset_import, helper.make_opsetid(CONTRIB, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)


def _check_ids(front: onnx.ModelProto, tokenizer: Any, max_length: int, texts: list[str]) -> int:
    """Every text's token inputs from the fused tokenizer equal the tokenizer's; returns the count."""
    import onnxruntime as ort

    from onnxkit.export.verify import ParityError

    sess = ort.InferenceSession(front.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for start in range(0, len(texts), 64):
        batch = texts[start : start + 64]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        got = dict(zip(names, sess.run(names, {TEXT_INPUT: np.array(batch, dtype=object)}), strict=True))
        for name in names:
            want = np.asarray(enc[name], dtype=np.int64)
            if not np.array_equal(got[name], want):
                # rows padded to another length differ too: name the first text that differs
                rows = zip(batch, got[name], want, strict=False)
                text = next((t for t, a, b in rows if not np.array_equal(a, b)), batch[0])
                raise ParityError(
                    f"the fused tokenizer's {name} differ from the tokenizer's on {text[:80]!r}; "
                    "nothing was written. Export without --fuse-tokenizer"
                )
    return len(texts)


def fuse_into(model_path: Path, folder: Path, max_length: int) -> JSON:
    """Replace ``model_path`` by the fused graph, checked against tokenizer + model; return figures.

    Only ever called on a staging folder: on failure the caller discards the whole folder.
    """
    from transformers import AutoTokenizer

    from onnxkit.export.module import TWO_GB, run_onnx, session
    from onnxkit.export.samples import heldout_texts
    from onnxkit.export.verify import SAMPLE_TEXTS, assert_close, check_graph, max_diffs

    tok, pad_id, keep_last = tokenizer_graph(folder)
    model = onnx.load(str(model_path))
    # the last text runs past max_length, so truncation is checked too
    texts = [*SAMPLE_TEXTS, " ".join(SAMPLE_TEXTS * (max_length // 40 + 1))]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    names = [i.name for i in model.graph.input]
    want = run_onnx(session(model_path), {n: np.asarray(enc[n], dtype=np.int64) for n in names})
    fused = fuse_model(model, tok, pad_id, max_length, keep_last)
    large = model.ByteSize() > TWO_GB - 64 * 1024**2
    onnx.save_model(
        fused,
        str(model_path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=model_path.name + ".data",
    )
    check_graph(model_path)
    got = run_onnx(session(model_path, session_options()), {TEXT_INPUT: np.array(texts, dtype=object)})
    diffs = max_diffs(want, got)
    assert_close(diffs, 1e-5, "the fused tokenizer vs the tokenizer + model")
    # The model check above sees a few sentences; the tokenizer alone is cheap to compare on many
    # more: the held-out texts, and strings that trip tokenizers (spacing, accents, emoji, empty).
    front = _front_model(model, tokenizer_nodes(model, tok, pad_id, max_length, keep_last))
    checked = _check_ids(front, tokenizer, max_length, [*texts, *TRICKY_TEXTS, *heldout_texts()])
    op = next(n.op_type for n in tok.node if n.op_type.endswith("Tokenizer"))
    return {
        "reference": "tokenizer + model",
        "max_abs_diff": diffs,
        "tokenizer_op": op,
        "ids_identical_on_texts": checked,
    }
