"""On a multi-node cluster every node's trials write to the storage path: checked before the study starts,
since a node that sees another folder would lose its trials' results."""
from __future__ import annotations

import uuid
from pathlib import Path

from .settings import StudyError, is_uri


def check_shared_storage(storage_path: str) -> None:
    """Trials on every node write to the storage path, so every node must see the same folder: the
    driver writes a marker and a zero-CPU task on each node looks for it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2 or is_uri(storage_path):
        return
    marker = Path(storage_path) / f".shared-check-{uuid.uuid4().hex}"
    marker.write_text("ok")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return Path(path).exists()

    try:
        checks = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        blind = [node for node, ref in checks.items() if not ray.get(ref, timeout=60)]
    finally:
        marker.unlink()
    if blind:
        raise StudyError(f"--storage-path: {storage_path} is not shared: node(s) {', '.join(blind)} cannot see it. "
                         f"On a multi-node cluster put --storage-path on a filesystem every node mounts (NFS, Lustre, …)")
