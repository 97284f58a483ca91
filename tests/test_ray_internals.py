"""Each private name of Ray in study/ray_internals.py still exists and still does what the pin relies on.

A failure here after a Ray upgrade names the pin to revisit (docs/architecture.md, "Pins on private APIs")."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from study import ray_internals


def test_the_cluster_flag_is_off_inside_and_put_back_after_an_error():
    from ray._private import services
    before = ray_internals.cluster_mode()
    assert before is True  # Linux: Ray clusters across machines, so it picks the LAN address
    with pytest.raises(RuntimeError, match="inside"):
        with ray_internals.cluster_mode_off():
            assert ray_internals.cluster_mode() is False
            assert services.get_node_ip_address() == "127.0.0.1"  # what the flag is for
            raise RuntimeError("inside")
    assert ray_internals.cluster_mode() is before


def test_the_grpc_port_function_is_ray_s_and_replaceable_everywhere_it_is_held():
    functions = ray_internals.grpc_port_functions()
    assert functions is not None, "ray._common.tls_utils/network_utils moved: revisit loopback_worker_setup"
    assert functions.build_address("127.0.0.1", 8) == "127.0.0.1:8"
    assert functions.build_address("::1", 8) == "[::1]:8"
    for module in ray_internals.GRPC_PORT_HOLDERS:  # still imports it by name (else nothing to replace there)
        assert importlib.import_module(module).add_port_to_grpc_server is functions.add_port
    calls = []
    try:
        ray_internals.replace_grpc_add_port(lambda server, address: calls.append(address))
        from ray._common import tls_utils
        tls_utils.add_port_to_grpc_server(None, "[::]:0")
        sys.modules[ray_internals.GRPC_PORT_HOLDERS[0]].add_port_to_grpc_server(None, "0.0.0.0:0")
    finally:
        ray_internals.replace_grpc_add_port(functions.add_port)
    assert calls == ["[::]:0", "0.0.0.0:0"]
    assert ray_internals.grpc_port_functions().add_port is functions.add_port


def test_a_trial_moves_into_another_experiment_folder(tmp_path):
    from ray.train._internal.storage import StorageContext  # a trial's storage, as Tune makes it
    from ray.tune.experiment import Trial

    def trial_in(folder: str) -> Trial:
        storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name=folder, trial_dir_name="trial_x")
        return Trial("trainable", config={}, trial_id="x", storage=storage, stub=True)

    old, new = trial_in("A"), trial_in("B")
    name = Path(old.path).name
    assert old.remote_experiment_path == str(tmp_path / "A")
    location = ray_internals.experiment_location(new)
    assert location == (new.storage.storage_filesystem, str(tmp_path), "B")
    ray_internals.move_trial(old, location)
    assert (old.path, old.remote_experiment_path) == (str(tmp_path / "B" / name), str(tmp_path / "B"))


def test_asha_rung_records_are_the_ones_it_decides_by():
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler
    scheduler = ASHAScheduler(time_attr="epoch", metric="score", mode="min", grace_period=2, reduction_factor=2,
                              max_t=8)
    assert ray_internals.asha_metric(scheduler) == ("score", -1.0)
    rungs = ray_internals.asha_rung_records(scheduler)
    assert [milestone for milestone, _ in rungs] == [8, 4, 2]
    rungs[-1][1].update(a=-0.1, b=-0.2, c=-0.3)  # three trials recorded at epoch 2 (minimised: signs flipped)
    trial = SimpleNamespace(trial_id="d", status="RUNNING")
    scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, trial, {"epoch": 2, "score": 0.5}) == TrialScheduler.STOP
    assert rungs[-1][1]["d"] == -0.5


def test_the_wandb_run_hook_takes_the_trial_and_the_run_arguments():
    import inspect

    from ray.air.integrations.wandb import WandbLoggerCallback
    hook = getattr(WandbLoggerCallback, ray_internals.WANDB_RUN_HOOK)
    assert list(inspect.signature(hook).parameters) == ["self", "trial", "exclude_results", "wandb_init_kwargs"]
    source = inspect.getsource(WandbLoggerCallback.log_trial_start)
    assert f"self.{ray_internals.WANDB_RUN_HOOK}(trial, exclude_results, **wandb_init_kwargs)" in source


def test_a_tuner_runs_with_the_callbacks_list_it_hands_out(tmp_path):
    from ray import tune
    from ray.tune import Callback

    class Marker(Callback):
        pass

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="x", storage_path=str(tmp_path),
                                                                     callbacks=[Marker()]))
    callbacks = ray_internals.restored_callbacks(tuner)
    assert [type(c) for c in callbacks] == [Marker]
    callbacks.append(Marker())
    assert len(tuner._local_tuner.get_run_config().callbacks) == 2  # the very list the run starts with
