"""A node lost while a trial runs on it: on a two-node `ray.cluster_utils.Cluster` (head and worker, one
CPU each, storage shared because both are this machine, or an S3 bucket), the study attached with
`--address` keeps going; the trial restarts on the head from its last checkpoint and ends exactly as an
uninterrupted twin (the same trial trained here, without Ray)."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from balpoe.trainer import Trainer
from conftest import SMOKE, eventually
from results import load_experiment
from results.reader import read_trial, trial_folders
from results.storage import Location, location
from results.trial_params import TrialParams
from study.trainable import trial_epochs
from study.run import main

# what may differ between two runs of the same trial: when, where, how fast, and Tune's bookkeeping
NOT_COMPARED = {"epoch_seconds", "train_seconds", "train_images_per_s", "time_this_iter_s", "time_total_s",
                "timestamp", "date", "pid", "peak_memory_mb", "time_since_restore", "iterations_since_restore",
                "training_iteration", "trial_id", "experiment_tag", "hostname", "node_ip", "node_id",
                "checkpoint_dir_name", "done", "should_checkpoint", "config"}
EPOCHS = 4


def study_argv(address: str, storage: str, name: str) -> list[str]:
    argv = ["baseline", *SMOKE, "--epochs", str(EPOCHS), "--seeds", "1", "2", "--max-failures", "2",
            "--address", address, "--name", name, "--storage-path", str(storage)]
    argv.remove("--num-cpus"), argv.remove("2")  # the cluster's size is its own
    return argv


def raw_rows(trial_folder: Location) -> list[dict]:
    """Every report line of a trial as written, repeats after a restore included."""
    return [json.loads(line) for line in (trial_folder / "result.json").read_text().splitlines() if line.strip()]


class NodeRemover(threading.Thread):
    """Removes `node` once a trial running there has reported (and checkpointed) epoch `after`, and
    before it ends: the moment is read from the trials' own result files."""

    def __init__(self, cluster, node, experiment: Location, after: int = 2, timeout_s: float = 600):
        super().__init__(daemon=True)
        self.cluster, self.node, self.experiment, self.after, self.timeout_s = cluster, node, experiment, after, timeout_s
        self.removed_at: dict | None = None  # the trial's last report on the node when it was removed

    def run(self) -> None:
        eventually(self.remove_when_due, timeout_s=self.timeout_s, interval_s=0.2)

    def remove_when_due(self) -> bool:
        """Removes the node if a trial there is at the moment; true once it was removed."""
        for folder in trial_folders(self.experiment) if self.experiment.exists() else []:
            rows = read_trial(folder).rows
            last = rows[-1] if rows else {}
            if last.get("node_id") == self.node.node_id and self.after <= last["epoch"] < EPOCHS and \
                    any(folder.glob("checkpoint_*")):
                self.cluster.remove_node(self.node, allow_graceful=False)
                self.removed_at = {**last, "folder": folder.name}
                return True
        return False


def uninterrupted_twin(params: dict) -> list[dict]:
    """The same trial (its Tune config) trained here without Ray and without a fault: the trainable's own
    loop, on one thread as the trial was."""
    given = TrialParams.of(params)
    torch.set_num_threads(given.threads)
    trainer = Trainer(given.recipe())
    return [metrics for metrics, _ in trial_epochs(trainer, EPOCHS)]


def lose_a_node(cluster, experiment: Location, storage: str, name: str) -> dict:
    """Run the study on the head and a fresh worker, remove the worker while a trial runs there, check the
    study completed with that trial restarted on the head from its checkpoint; returns the lost trial's
    last report on the worker."""
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    head_id = cluster.head_node.node_id
    remover = NodeRemover(cluster, worker, experiment)
    remover.start()
    assert main(study_argv(cluster.address, storage, name)) == 0
    remover.join(timeout=5)
    removed = remover.removed_at
    assert removed is not None, "no trial ran on the worker node long enough to lose it"

    # both nodes ran trials: the lost one on the worker, the other on the head
    everything = [row for folder in trial_folders(experiment) for row in raw_rows(folder)]
    assert {row["node_id"] for row in everything} == {head_id, worker.node_id}
    # the study completed; the trial failed once (its node died) and finished on the head
    trials = load_experiment(experiment).trials.set_index("trial_id")
    assert trials["status"].tolist() == ["finished", "finished"] and trials["epochs_run"].tolist() == [EPOCHS] * 2
    lost = trials.loc[removed["trial_id"]]
    assert lost["failures"] == 1 and lost["node_id"] == head_id
    # ... from its last checkpoint: the head's first report is the epoch after the last one kept,
    # never epoch 1 again, and every epoch the worker reported before is kept
    lines = raw_rows(experiment / removed["folder"])
    on_worker = [r["epoch"] for r in lines if r["node_id"] == worker.node_id]
    on_head = [r["epoch"] for r in lines if r["node_id"] == head_id]
    assert on_worker[:removed["epoch"]] == list(range(1, removed["epoch"] + 1))
    assert 1 < on_head[0] <= removed["epoch"] + 1 and on_head[-1] == EPOCHS
    assert sorted(set(on_worker) | set(on_head)) == list(range(1, EPOCHS + 1))
    return removed


@pytest.mark.ray
def test_a_trial_on_a_lost_node_restarts_from_its_checkpoint_and_ends_as_its_uninterrupted_twin(tmp_path,
                                                                                                object_store):
    """On a folder, then on an S3 bucket (moto's; Ray's nodes start after the fixture set the AWS
    environment): one cluster, a new worker node for each study."""
    import ray
    from ray.cluster_utils import Cluster

    bucket = object_store.bucket("lost-node") + "/runs"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        lost = {where: lose_a_node(cluster, location(storage) / "lost-node", storage, "lost-node")
                for where, storage in (("folder", str(tmp_path)), ("bucket", bucket))}
    finally:
        ray.shutdown()
        cluster.shutdown()

    # the twin: the same trial, nothing lost; every metric equal, bit for bit
    for where, storage in (("folder", str(tmp_path)), ("bucket", bucket)):
        trial = read_trial(location(storage) / "lost-node" / lost[where]["folder"])
        twin = uninterrupted_twin(trial.params)
        assert [r["epoch"] for r in trial.rows] == [r["epoch"] for r in twin] == list(range(1, EPOCHS + 1))
        shared = set(twin[-1]) - NOT_COMPARED
        assert {"val_balanced_acc", "test_balanced_acc", "train_loss"} <= shared
        assert [as_text(r, shared) for r in trial.rows] == [as_text(r, shared) for r in twin], where


def as_text(row: dict, keys: set) -> str:
    """The row's values of `keys` as JSON text: compared exactly, NaN (no many-shot class) equal to NaN."""
    return json.dumps({k: row[k] for k in keys if k in row}, sort_keys=True)
