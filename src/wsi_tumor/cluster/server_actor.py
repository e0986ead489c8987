"""One Triton server per Ray node, owned by an actor (``wsi-infer --ray --ray-servers per-node``).

The driver starts one :class:`NodeServer` actor on every node that can run slide tasks,
pinned there with a hard node affinity; each actor starts a
:class:`~wsi_tumor.serving.local_server.LocalTritonServer` on the model repository, which
must be on storage every node mounts at the same path. Every slide task gets the map of node
id -> server URL and uses the server of the node it landed on, including a task retried on
another node after its first node died (it looks the URL up; it never waits on an actor,
which would hand its CPUs back to Ray). The driver stops the servers when the cohort ends; a
node that dies takes its server with it.

The server is not counted in Ray's resources (the actor asks for no CPU): it shares the node
with the slide tasks, as the embedded server of a single-process run does.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_tumor.errors import ServerError

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 60.0


class NodeServer:
    """The body of a per-node server actor: start a local tritonserver, answer its URL.

    Args:
        repository: Model repository (a path valid on this node).
        ready_timeout_s: Seconds to wait for the server to be ready.

    Raises:
        ServerError: the server cannot start (the actor then dies; see :func:`start_node_servers`).
    """

    def __init__(self, repository: str, ready_timeout_s: float) -> None:
        from wsi_tumor.serving.local_server import LocalTritonServer

        self._server = LocalTritonServer(Path(repository), ready_timeout_s=ready_timeout_s)
        self._server.start()

    def grpc_url(self) -> str:
        """``127.0.0.1:PORT``: tasks on the same node reach it over loopback."""
        if not self._server.running:
            raise ServerError(f"tritonserver on {self._server.repository} is not running")
        return self._server.grpc_url

    def stop(self) -> None:
        """Stop the server and its backend stubs."""
        self._server.stop()


def task_nodes(ray: Any, task_cpus: float) -> list[str]:
    """Ids of the alive nodes with at least ``task_cpus`` CPUs (where slide tasks can run)."""
    return [
        node["NodeID"]
        for node in ray.nodes()
        if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) >= task_cpus
    ]


@dataclass
class NodeServers:
    """The per-node servers of a cohort.

    Attributes:
        actors: Node id -> handle of every server actor started (ready or not), to stop.
        urls: Node id -> ``host:port`` of its server, as seen from that node (ready ones).
    """

    actors: dict[str, Any] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)


def start_node_servers(
    ray: Any, servers: NodeServers, repository: Path, nodes: list[str], ready_timeout_s: float
) -> None:
    """Start a :class:`NodeServer` actor on each of ``nodes`` into ``servers``; wait for them.

    Every actor is recorded in ``servers`` as soon as it is created, so that
    :func:`stop_node_servers` stops them even when this function is interrupted. A node whose
    server fails to start is left out of ``servers.urls`` with a warning (its slide tasks then
    start an embedded server of their own).

    Raises:
        ServerError: no server started on any node.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(NodeServer)
    for node in nodes:
        servers.actors[node] = remote.options(
            num_cpus=0,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(str(repository), ready_timeout_s)
    refs = {node: servers.actors[node].grpc_url.remote() for node in nodes}
    errors = []
    for node, ref in refs.items():
        try:
            # the server gives up (and stops) after ready_timeout_s: wait a little longer
            url = ray.get(ref, timeout=ready_timeout_s + 60.0)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            log.warning("node %s: its Triton server did not start: %s", node[:8], reason)
            errors.append(f"{node[:8]}: {reason}")
            continue
        log.info("node %s: Triton server ready at %s", node[:8], url)
        servers.urls[node] = url
    if nodes and not servers.urls:
        raise ServerError(
            f"no per-node Triton server started on {repository}: " + "; ".join(errors)
        )


def stop_node_servers(ray: Any, servers: NodeServers) -> None:
    """Stop the servers, then end their actors; never raises.

    An actor ended without :meth:`NodeServer.stop` (``ray.kill``, or Ray ending the job when
    the driver dies) leaves its ``tritonserver`` running: it runs in a session of its own.
    """
    refs = []
    for actor in servers.actors.values():
        with contextlib.suppress(Exception):
            refs.append(actor.stop.remote())
    for ref in refs:
        with contextlib.suppress(Exception):  # a node that died took its server with it
            ray.get(ref, timeout=STOP_TIMEOUT_S)
    for actor in servers.actors.values():
        with contextlib.suppress(Exception):
            ray.kill(actor)
