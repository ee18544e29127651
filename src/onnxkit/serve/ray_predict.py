"""``onnxkit predict --ray``: the input file as a Ray Dataset, through a pool of actors that each hold the model.

``ray_input`` reads the file as ``(number, raw, error)`` rows, exactly as local predict reads it.
``map_batches`` sends batches to a fixed pool of ``--workers`` actors; each runs the model's app in
its own event loop, as local ``predict`` does (``serve.predict``: the same line parsing, requests,
batchers and rendering), so a line's answer is the same JSON. Ray Data keeps the input order; the
driver writes and flushes each line as it comes (so ``--output`` resumes as locally) and shows its
own progress bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.models.folder import model_kind
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.predict import (
    Interrupted,
    Line,
    Summary,
    answers,
    app_client,
    parse_line,
    read_lines,
    render,
    route_for,
    text_line,
)
from onnxkit.serve.ray_cluster import connect
from onnxkit.serve.ray_input import LinesDatasource, line_error
from onnxkit.serve.ray_shipping import Shipment, land, ship
from onnxkit.settings import ServerSettings, default_home


class Predictor:
    """A Ray Data actor: the model's app in this process, ``(number, raw)`` rows in, rendered lines out."""

    def __init__(self, spec: ModelSpec, shipment: Shipment, source_suffix: str, settings: ServerSettings,
                 concurrency: int) -> None:
        self.spec = replace(spec, path=land(shipment, default_home()))
        self.kind = model_kind(self.spec.path)
        self.suffix = source_suffix
        self.concurrency = max(1, concurrency)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="onnxkit-predict", daemon=True).start()
        self.exits = contextlib.AsyncExitStack()
        self.client = self._await(self.exits.enter_async_context(app_client(self.spec, settings)))

    def _await(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _line(self, number: int, raw: str | None, status: int | None, error: str | None) -> Line | None:
        if error is not None:  # not UTF-8, or longer than the body limit: answered in place
            err = line_error(status or 400, error)
            return Line(number, route_for(self.kind, self.spec.name, {}), {}, problem=err)
        if self.suffix == ".parquet":
            return text_line(number, raw, self.spec, self.kind)
        return parse_line(number, raw or "", self.spec, self.kind, is_text=self.suffix == ".txt")

    async def _answer(self, lines: list[Line]) -> tuple[list[str], list[bool]]:
        rendered: list[str] = []
        ok: list[bool] = []
        async for line, answer in answers(lines, self.client, self.concurrency):
            rendered.append(render(line, answer))
            ok.append(answer.status < 400)
        return rendered, ok

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = zip(*(batch.column(c).to_pylist() for c in ("number", "raw", "status", "error")), strict=True)
        lines = [line for row in rows if (line := self._line(*row)) is not None]
        rendered, ok = self._await(self._answer(lines))
        return pa.table({"line": pa.array(rendered, pa.string()), "ok": pa.array(ok, pa.bool_())})


FREE_CPUS_WAIT_S = 5.0  # CPUs that a run which just ended still holds come back within this


def wait_for_cpus(free: Callable[[], float], workers: int, per_worker: float, total: float,
                  wait_s: float = FREE_CPUS_WAIT_S) -> None:
    """Fail at once (after a short wait) when the actors cannot all start, as Ray Data would wait for ever.

    Ray Data's actor pool waits, with a warning, until the cluster has the CPUs its actors ask for; with
    a Serve application or another job holding them, the run would hang before its first line.
    """
    need = workers * per_worker
    deadline = time.monotonic() + wait_s
    while (now := free()) + 1e-9 < need:
        if time.monotonic() >= deadline:
            fit = int((now + 1e-9) // per_worker) if per_worker else workers
            raise OnnxkitError(
                f"predict --ray needs {workers} worker(s) x {per_worker:g} CPU = {need:g} CPUs, but the cluster "
                f"has {now:g} of its {total:g} CPUs free ({'none' if fit == 0 else f'{fit} worker(s)'} would "
                "fit now; other work holds the rest, such as a `serve --ray` application or another job's "
                "actors). Ask for less (--workers N, or --threads T: a worker takes min(T, cluster CPUs / "
                "workers) CPUs), free CPUs (`onnxkit stop` a serve --ray on this cluster), or add a node")
        time.sleep(0.25)


def predict_on_ray(
    spec: ModelSpec,
    source: Path,
    out: IO[str],
    *,
    address: str | None,
    workers: int | None,
    settings: ServerSettings,
    concurrency: int = 64,
    progress: bool = True,
    transfer: str = "auto",
    skip: int = 0,
    stop: threading.Event | None = None,
) -> Summary:
    """Answers ``source``'s requests into ``out`` as ``predict`` does; ``skip``: requests already answered."""
    from tqdm import tqdm

    if workers is not None and workers < 1:
        raise InvalidRequest(f"--workers {workers}: expected at least 1 actor")
    if not source.is_file():
        raise InvalidRequest(f"input file {source} does not exist")
    # The first request left: a file this model cannot take fails here, and a resumed run starts there.
    first = next(read_lines(source, spec, model_kind(spec.path), skip=skip,
                            max_line_bytes=settings.max_body_bytes), None)
    if first is None:
        return Summary()
    with connect(address) as cluster:
        import ray

        workers = workers or cluster.nodes  # one actor per node, with its cores as threads
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # output lines in input order
        context.enable_progress_bars = False  # ours counts written lines
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        threads = settings.threads or max(1, cluster.cpus // workers)
        settings = replace(settings, threads=threads)
        per_worker = min(float(threads), cluster.cpus / workers) if cluster.cpus else float(threads)
        def free() -> float:
            return float(ray.available_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]

        wait_for_cpus(free, workers, per_worker, float(cluster.cpus))
        shipment = ship(spec.name, spec.path, transfer)
        rows = ray.data.read_datasource(LinesDatasource(source, first.number, settings.max_body_bytes), num_cpus=0)
        results = rows.map_batches(
            Predictor,
            fn_constructor_args=(spec, shipment, source.suffix, settings, concurrency),
            batch_size=max(256, 4 * concurrency),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=per_worker,
        )
        summary = Summary()
        bar = tqdm(desc=f"predict {spec.name} on Ray ({workers} workers)", unit="req", initial=skip,
                   disable=not progress)
        for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
            for line, ok in zip(batch.column("line").to_pylist(), batch.column("ok").to_pylist(), strict=True):
                out.write(line + "\n")
                out.flush()  # a line written is a line kept, as locally
                if ok:
                    summary.ok += 1
                else:
                    summary.failed += 1
            bar.update(batch.num_rows)
            if stop is not None and stop.is_set():
                raise Interrupted
        bar.close()
    return summary
