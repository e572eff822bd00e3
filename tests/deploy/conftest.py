"""One local Ray cluster (2 CPUs, Serve's proxy on 127.0.0.1) for every Ray test of the session: starting Ray is
most of a module's time. Each module deploys its own application on it and deletes it at its end, so the next finds
the cluster's CPUs free. The session's end checks that no Ray process is left behind."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import pytest

# Ray's handles push their ongoing-request counts to the autoscaler every 10 s by default; every second keeps the
# autoscaling test short. Read by Ray's processes as they start, so set before the cluster starts.
AUTOSCALING_METRICS_ENVIRONMENT = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


@dataclass(frozen=True)
class RayCluster:
    url: str  # Serve's HTTP proxy


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    import ray
    from ray import serve

    from ingot.deploy.ray import CLUSTER_ENVIRONMENT, start_cluster

    with pytest.MonkeyPatch.context() as patch:
        for name in CLUSTER_ENVIRONMENT:
            patch.delenv(name, raising=False)  # start_cluster sets them; the session's end takes them away again
        for name, value in AUTOSCALING_METRICS_ENVIRONMENT.items():
            patch.setenv(name, value)
        patch.delenv("RAY_ADDRESS", raising=False)
        port = _free_port()
        try:
            start_cluster("127.0.0.1", port, num_cpus=2)
            yield RayCluster(f"http://127.0.0.1:{port}")
        finally:
            serve.shutdown()
            ray.shutdown()
    from tests.server.helpers import eventually

    assert eventually(lambda: not _ray_processes_started_here(), timeout=30), _ray_processes_started_here()


@contextmanager
def deployed(application, wait: bool = True) -> Iterator[None]:
    """``application`` on the cluster as ingot's application (route /) until the block ends, then deleted (its
    replicas gone, their CPUs free). ``wait``: return once its replicas are all running, else once it is submitted."""
    from ray import serve

    from ingot.deploy.ray import APP_NAME

    target = serve.RunTarget(application, name=APP_NAME, route_prefix="/")
    serve.run_many([target], wait_for_applications_running=wait)
    try:
        yield
    finally:
        serve.delete(APP_NAME)


def running_replicas() -> int:
    """Engine replicas Ray reports running in ingot's application."""
    from ray import serve

    from ingot.deploy.ray import APP_NAME

    deployment = serve.status().applications[APP_NAME].deployments["IngotReplica"]
    return deployment.replica_states.get("RUNNING", 0)


def _ray_processes_started_here() -> list[str]:
    """The command lines of this process's descendants that belong to Ray (its GCS, raylet, workers)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if "ray" in command.split("/") or "ray::" in command or "/ray/" in command:
            found.append(command[:200])
    return found
