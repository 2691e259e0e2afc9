"""Where render workers go: what each asks of Ray, how many the cluster can host, and the
message that says so when it cannot.

Ray's default scheduling prefers the driver's node, so the pool asks for Ray's SPREAD
strategy by default: one worker per node in turn, then a second on each, and so on. "pack"
fills nodes one after the other, the driver's first, each up to what it can hold (a soft
node affinity per worker: Ray places it elsewhere if that node is gone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STRATEGIES = {"spread": "SPREAD", "pack": "DEFAULT"}


@dataclass
class Node:
    node_id: str
    ip: str
    resources: dict[str, float]

    def label(self) -> str:
        return f"{self.ip} ({self.node_id[:8]})"


def worker_resources(cpus: float, gpus: float, custom: dict[str, float] | None = None) -> dict:
    """What Ray reserves for one worker (resources asked for 0 are left out)."""
    need = {"CPU": float(cpus), "GPU": float(gpus)} | {k: float(v) for k, v in (custom or {}).items()}
    return {k: v for k, v in need.items() if v > 0}


def alive_nodes() -> list[Node]:
    import ray

    return [Node(n["NodeID"], n.get("NodeManagerAddress", "?"), dict(n.get("Resources", {})))
            for n in ray.nodes() if n.get("Alive")]


def hostable(need: dict[str, float], nodes: list[Node]) -> float:
    """How many workers needing ``need`` the nodes can hold at once (inf when ``need`` is
    empty): a worker lives on one node, so each node is counted on its own."""
    if not need:
        return math.inf
    total = 0
    for node in nodes:
        # a small tolerance: Ray stores fractions in units of 1/10000
        total += min(math.floor(node.resources.get(k, 0.0) / v + 1e-6) for k, v in need.items())
    return total


def pack_order(n: int, need: dict[str, float], nodes: list[Node], first: str | None) -> list[str]:
    """Node ids for ``n`` workers, filling the node ``first`` (the driver's), then the others."""
    order = sorted(nodes, key=lambda nd: (nd.node_id != first, nd.ip, nd.node_id))
    out: list[str] = []
    for node in order:
        room = hostable(need, [node])
        take = n - len(out) if math.isinf(room) else min(int(room), n - len(out))
        out += [node.node_id] * take
    return out


def strategy(kind: str, node_id: str | None = None):
    """Ray's scheduling strategy for one worker."""
    if kind == "pack" and node_id:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id, soft=True)
    return STRATEGIES[kind]


def fleet_size(workers: int | str, need: dict[str, float], nodes: list[Node]) -> int:
    """``workers``, or for "auto" as many as the cluster can host."""
    can = hostable(need, nodes)
    if workers == "auto":
        if math.isinf(can):
            raise ValueError("pool.workers: 'auto' sizes the fleet from the resources each worker "
                             "asks for; set pool.worker_cpus or pool.worker_gpus > 0")
        if can < 1:
            raise CapacityError("pool: " + shortfall(1, need, nodes))
        return int(can)
    if workers > can:
        raise CapacityError("pool: " + shortfall(int(workers), need, nodes))
    return int(workers)


def shared_size(workers: int | str, pools: int, need: dict[str, float], nodes: list[Node]) -> int | str:
    """The ``workers`` of each of ``pools`` pools that share the cluster: "auto" becomes an
    equal share of what it can host, and a fixed count must fit ``pools`` times."""
    can = hostable(need, nodes)
    if math.isinf(can):
        return workers
    total = int(can) if workers == "auto" else pools * int(workers)
    if total < pools or total > can:
        raise CapacityError(f"pool: {pools} pools of render workers share the cluster "
                            f"(data.second_view adds one); " + shortfall(max(total, pools), need, nodes))
    return total // pools


class CapacityError(RuntimeError):
    """The cluster cannot host the workers asked for."""


def shortfall(workers: int, need: dict[str, float], nodes: list[Node], up: int | None = None) -> str:
    """What was asked for against what the cluster has, and the fixes."""
    ask = ", ".join(f"{k}: {v:g}" for k, v in need.items()) or "nothing"
    keys = sorted(set(need) | {"CPU", "GPU"})
    have = "; ".join(f"{n.label()}: " + ", ".join(f"{k} {n.resources.get(k, 0):g}" for k in keys)
                     for n in nodes) or "no live node"
    now = "" if up is None else f" ({up} up now)"
    can = hostable(need, nodes)
    room = "any number" if math.isinf(can) else str(int(can))
    return (f"asked for {workers} render workers of {{{ask}}} each{now}; the cluster can "
            f"host {room}: {len(nodes)} node(s): {have}. Lower pool.workers (or 'auto'), "
            "pool.worker_cpus or pool.worker_gpus, raise ray.num_cpus / ray.num_gpus for a "
            "local Ray, or add nodes")
