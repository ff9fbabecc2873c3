"""What a node's role threads (worker, device, coordinator) may use of their node: its config,
its sockets' context and peers, its queues, its counters.  nodes/runtime/node.py's `Node` is the
one implementation; the roles depend on this, so that the node can import them."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import zmq

    from nodes.runtime.node_config import NodeConfig
    from nodes.runtime.protocol import WireStage
    from nodes.runtime.security import CurveKeys
    from nodes.runtime.transport import Inbound, Stats, WorkQueue


class NodeContext(Protocol):
    config: NodeConfig
    host: str
    stop: threading.Event
    stats: Stats
    context: zmq.Context
    endpoints: dict[str, str]
    curve: CurveKeys | None
    work: WorkQueue
    requests: queue.Queue[Inbound]
    replies: queue.Queue[Inbound]

    def error_frames(self, origin: str, request_id: str, reason: str, plan: list[WireStage] | None = None,
                     stage: int | None = None) -> list: ...

    def write_status(self, state: str, **extra: Any) -> None: ...
