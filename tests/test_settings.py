"""Settings are typed once, checked once and never change: `Config` and `StudySettings`."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

import balpoe.config as config_module
from balpoe.config import Config, ConfigError
from results.settings import StudyError, StudySettings
from results.trial_params import TrialParams
from study.options import build_parser
from study.settings import resume_settings, settings_from_args

SEARCH = ["search", "--preset", "smoke", "--num-samples", "4", "--range", "mixup_alpha=0:0.8"]


def settings_for(argv: list[str], tmp_path) -> StudySettings:
    return settings_from_args(build_parser().parse_args([*argv, "--storage-path", str(tmp_path)]))


def test_a_config_cannot_be_changed_and_replace_returns_a_new_one():
    config = Config()
    with pytest.raises(ValidationError, match="frozen"):
        config.lr = 1.0
    shorter = config.replace(epochs=10)
    assert (config.epochs, config.step1) == (200, 160) and (shorter.epochs, shorter.step1) == (10, 8)


def test_study_settings_cannot_be_changed_after_construction(tmp_path):
    settings = settings_for(SEARCH, tmp_path)
    for field, value in (("num_samples", 8), ("base", Config()), ("max_t", 1), ("cpus_per_trial", 2.0)):
        with pytest.raises(ValidationError, match="frozen"):
            setattr(settings, field, value)
    with pytest.raises(TypeError):
        settings.seeds[0] = 5  # tuples, not lists
    resolved = settings.with_changes(cpus_per_trial=1.0, gpus_per_trial=0.0)
    assert (settings.cpus_per_trial, resolved.cpus_per_trial) == (None, 1.0)
    assert resolved.base is settings.base  # the recipe object is reused, not rebuilt


def test_defaults_are_resolved_when_the_settings_are_built(tmp_path):
    settings = settings_for(SEARCH, tmp_path)
    assert settings.base.epochs == 2 and settings.max_t == 2 and settings.grace_period == 1
    assert settings.startup_trials == 2 and settings.ranges == {"mixup_alpha": (0.0, 0.8), "tau_spread": (0.0, 1.5)}
    assert settings.objectives == (("val_balanced_acc", "max"),) and settings.asha


def test_study_json_round_trips_and_resume_places_it_where_the_folder_is_now(tmp_path):
    settings = settings_for(SEARCH, tmp_path / "first")
    folder = tmp_path / "moved" / "renamed"
    folder.mkdir(parents=True)
    settings.save(folder)
    assert StudySettings.load(folder).with_changes(storage_path=settings.storage_path, name=settings.name) == settings
    args = build_parser().parse_args(["resume", str(folder)])
    resumed = resume_settings(args)
    assert (resumed.storage_path, resumed.name) == (str(folder.parent), "renamed")
    assert resumed.base == settings.base and resumed.ranges == settings.ranges


def test_results_and_the_driver_read_study_json_through_the_same_model(tmp_path):
    from results import load_experiment
    from results.reader import read_settings
    settings = settings_for(["baseline", "--preset", "smoke", "--seeds", "1", "2"], tmp_path)
    folder = tmp_path / settings.name
    folder.mkdir()
    settings.save(folder)
    assert read_settings(folder) == StudySettings.load(folder) == settings
    assert load_experiment(folder).settings == settings  # what every reader holds
    (folder / "study.json").write_text(json.dumps({**json.loads((folder / "study.json").read_text()), "max_t": 0}))
    with pytest.raises(ValueError, match="--max-t: must be in"):
        read_settings(folder)


def count_config_builds(monkeypatch) -> list[int]:
    builds = [0]
    original = Config.__init__

    def counting(self, **values):
        builds[0] += 1
        original(self, **values)
    monkeypatch.setattr(config_module.Config, "__init__", counting)
    return builds


def test_a_trial_builds_its_recipe_from_its_dict_once(monkeypatch, tmp_path):
    from study.tuner import param_space
    settings = settings_for(SEARCH, tmp_path).with_changes(cpus_per_trial=1.0, gpus_per_trial=0.0)
    space = param_space(settings)
    trial = {**{k: v for k, v in space.items() if k not in ("mixup_alpha", "tau_spread")},
             "mixup_alpha": 0.3, "tau_spread": 0.5}
    builds = count_config_builds(monkeypatch)
    config = TrialParams.of(trial).recipe()
    assert builds[0] == 1
    assert config.mixup_alpha == 0.3 and config.tau_list == (0.5, 1.0, 1.5) and config.epochs == 2


def test_the_driver_never_rebuilds_the_recipe_of_settings_it_has(monkeypatch, tmp_path):
    from study.tuner import param_space
    settings = settings_for(["baseline", "--preset", "smoke", "--seeds", "1", "2", "3"], tmp_path)
    builds = count_config_builds(monkeypatch)
    resolved = settings.with_changes(cpus_per_trial=1.0, gpus_per_trial=0.0)
    param_space(resolved)
    assert (resolved.stop_epoch, resolved.epochs, resolved.expected_trials) == (2, 2, 3)
    assert builds[0] == 0


@pytest.mark.parametrize("values, message", [
    ({"lr": True}, "lr: must be a finite number (got True)"),
    ({"seed": 2**32}, "seed: must be in [0, 4294967295]"),
    ({"momentum": 1.0}, "momentum: must be in [0, 1)"),
    ({"epochs": 0}, "epochs: must be >= 1 (got 0)"),
    ({"tau_list": [1.0]}, "tau_list: needs one τ per expert"),
    ({"typo": 1}, "unknown config key(s): typo"),
])
def test_config_errors_name_the_field_in_our_words(values, message):
    with pytest.raises(ConfigError) as caught:
        config_module.from_dict(values)
    assert message in str(caught.value)


def test_study_settings_errors_name_the_option(tmp_path):
    settings = settings_for(SEARCH, tmp_path)
    with pytest.raises(StudyError, match="--reduction-factor: must be >= 2"):
        settings.with_changes(reduction_factor=1)
    with pytest.raises(StudyError, match="--max-concurrent: must be >= 1"):
        settings.with_changes(max_concurrent=0)
    with pytest.raises(StudyError, match="num_samples: must be a valid integer"):
        settings.with_changes(num_samples="4")


def test_resume_refuses_a_study_json_edited_after_the_start_naming_each_change(tmp_path):
    settings = settings_for(SEARCH, tmp_path)
    folder = tmp_path / settings.name
    folder.mkdir()
    settings.save(folder)
    values = json.loads((folder / "study.json").read_text())
    values["num_samples"], values["base"]["epochs"] = 8, 4
    (folder / "study.json").write_text(json.dumps(values))
    with pytest.raises(StudyError) as caught:
        resume_settings(build_parser().parse_args(["resume", str(folder)]))
    message = str(caught.value)
    assert "was changed after the study started" in message and "num_samples: 4 → 8" in message
    assert "base.epochs: 2 → 4" in message and "another --name" in message


def test_the_trial_context_is_declared_once_for_the_trainable_and_the_tables():
    from results.context import CONTEXT_KEYS, TrialContext
    from results.tables import NOT_EPOCH_METRICS
    row = TrialContext.of(Config(precision="bf16"), 7, device="cpu", gpu_ids="", node_id="n1").row()
    assert set(row) == CONTEXT_KEYS <= NOT_EPOCH_METRICS
    assert (row["tau_list"], row["stop_epoch"], row["planned_epochs"], row["precision"]) == ("0;1;2", 7, 200, "bf16")
