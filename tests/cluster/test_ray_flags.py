"""The Ray flags are checked before anything is pulled or started, and never silently ignored."""

from __future__ import annotations

import pytest

from onnxkit.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "m", "--replicas", "2"], "--replicas only apply with --ray"),
        (["serve", "m", "--ray-models", "path"], "--ray-models only apply with --ray"),
        (["serve", "--ray", "all-minilm-l6-v2"], "is not a Ray address"),
        (["serve", "m", "--ray", "--replicas", "auto"], "--replicas auto needs --max-replicas"),
        (["serve", "m", "--ray", "--replicas", "0"], "expected a whole number >= 1 or 'auto'"),
        (["serve", "m", "--ray", "--replicas", "2", "--max-replicas", "4"], "--max-replicas goes with --replicas auto"),
        (["predict", "m", "-i", "x.txt", "--workers", "2"], "--workers and --ray-models only apply with --ray"),
        (["predict", "m", "-i", "x.txt", "--ray", "nohost"], "is not a Ray address"),
    ],
)
def test_bad_ray_flags_are_refused_by_name(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("address", ["auto", "127.0.0.1:6379", "ray://head.example:10001", "[::1]:6379"])
def test_addresses_that_are_accepted(address: str) -> None:
    from onnxkit.serve.ray_cluster import check_address

    check_address(address)


@pytest.mark.parametrize(
    ("host", "address", "probed"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("0.0.0.0", None, "127.0.0.1"),
        ("0.0.0.0", "auto", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1:6379", "127.0.0.1"),
        ("0.0.0.0", "ray://head.example:10001", "head.example"),
        ("0.0.0.0", "10.0.0.5:6379", "10.0.0.5"),
        ("::", None, "::1"),
    ],
)
def test_readiness_is_asked_where_this_machine_reaches_the_proxy(host: str, address: str | None, probed: str) -> None:
    from onnxkit.serve.ray_cluster import probe_host

    assert probe_host(host, address) == probed


@pytest.mark.parametrize(
    ("threads", "cpus", "replicas", "max_replicas", "want"),
    [
        (0, 8, 2, 2, 4),  # the cluster's cores shared by the replicas
        (0, 2, 2, 2, 1),
        (0, 2, 4, 4, 1),  # at least one thread each
        (0, 8, None, 4, 2),  # autoscaling: shared by the most replicas there can be
        (3, 8, 2, 2, 3),  # --threads wins
    ],
)
def test_threads_per_replica_default_to_cores_over_replicas(
    threads: int, cpus: int, replicas: int | None, max_replicas: int, want: int
) -> None:
    from onnxkit.serve.ray_serve import Scaling, threads_per_replica
    from onnxkit.settings import ServerSettings

    scaling = Scaling(replicas=replicas, max_replicas=max_replicas)
    assert threads_per_replica(ServerSettings(threads=threads), cpus, scaling) == want
