import json
import re

import pytest

from balpoe import config as cfg
from balpoe.cli import build_parser, config_from_args
from balpoe.config import Config, ConfigError

# The values of the official configs/mixup/standard_training/config_cifar100_ir100_bs-experts.json
OFFICIAL_CIFAR100_IR100 = {
    "name": "Imbalance_CIFAR100LT_IR100", "n_gpu": 1,
    "arch": {"type": "ResNet32Model", "args": {"num_classes": 100, "reduce_dimension": False, "use_norm": True,
                                                "returns_feat": True, "num_experts": 3}},
    "data_loader": {"type": "ImbalanceCIFAR100DataLoader", "args": {
        "data_dir": "./data/CIFAR-100", "batch_size": 128, "shuffle": True, "num_workers": 4,
        "imb_factor": 0.01, "randaugm": False}},
    "optimizer": {"type": "SGD", "args": {"lr": 0.1, "weight_decay": 5e-4, "momentum": 0.9, "nesterov": True}},
    "add_extra_info": True,
    "loss": {"type": "BSExpertLoss", "tau_min": 0, "tau_max": 2.0, "args": {"tau_list": [0, 1.0, 2.0]}},
    "metrics": ["accuracy"],
    "lr_scheduler": {"type": "CustomLR", "args": {"step1": 160, "step2": 180, "gamma": 0.1, "warmup_epoch": 5}},
    "trainer": {"epochs": 200, "save_dir": "saved/cifar100/ir100/bs_e200_tau1.0_bs128_lr0.1", "save_period": 100,
                "verbosity": 2, "monitor": "max val_accuracy"},
    "combiner": {"type": "Combiner", "mode": "mixup", "mixup": {"alpha": 0.4}},
}


def test_defaults_are_the_paper_recipe():
    c = Config()
    assert (c.dataset, c.imb_factor, c.num_experts, c.tau_list) == ("cifar100-lt", 0.01, 3, (0.0, 1.0, 2.0))
    assert (c.use_norm, c.norm_scale, c.mixup_alpha) == (True, 30.0, 0.4)
    assert (c.lr, c.momentum, c.nesterov, c.weight_decay, c.batch_size) == (0.1, 0.9, True, 5e-4, 128)
    assert (c.warmup_epochs, c.step1, c.step2, c.gamma, c.epochs, c.save_period) == (5, 160, 180, 0.1, 200, 50)


def test_official_config_imports_with_its_values(tmp_path):
    path = tmp_path / "official.json"
    path.write_text(json.dumps(OFFICIAL_CIFAR100_IR100))
    c = cfg.load_file(path)
    expected = Config(data_dir="./data/CIFAR-100", save_dir="saved/cifar100/ir100/bs_e200_tau1.0_bs128_lr0.1",
                      save_period=100)
    assert c == expected


def test_official_tau_rules():
    tree = json.loads(json.dumps(OFFICIAL_CIFAR100_IR100))
    tree["arch"]["args"]["num_experts"] = 5
    tree["loss"]["args"]["tau_list"] = "limits"
    assert cfg.from_official(tree).tau_list == (0.0, 0.5, 1.0, 1.5, 2.0)
    tree["arch"]["args"]["num_experts"] = 4
    tree["loss"]["args"]["tau_list"] = "uniform"
    assert cfg.from_official(tree).tau_list == (0.25, 0.75, 1.25, 1.75)
    assert cfg.resolve_tau_list("limits", 1, 0, 2) == [1.0]
    assert cfg.resolve_tau_list("0;1.5", 2) == [0.0, 1.5]


def test_saved_config_round_trips(tmp_path):
    c = Config(dataset="fashion-mnist-lt", epochs=7, warmup_epochs=1, step1=5, step2=6, tau_list=[0.5, 1, 1.5],
               mixup_alpha=0.2, seed=3)
    cfg.save(c, tmp_path / "config.json")
    assert cfg.load_file(tmp_path / "config.json") == c
    official = json.loads((tmp_path / "config.json").read_text())
    assert official["arch"]["args"]["num_experts"] == 3 and official["combiner"]["mixup"]["alpha"] == 0.2
    assert [cfg.to_official(Config(device=d))["n_gpu"] for d in ("cpu", "cuda", "cuda:1", "mps")] == [0, 1, 1, 0]


def test_yaml_config(tmp_path):
    (tmp_path / "c.yaml").write_text("mixup_alpha: 0.0\nnum_experts: 1\ntau_list: [1]\n")
    c = cfg.load_file(tmp_path / "c.yaml")
    assert (c.mixup_alpha, c.num_experts, c.tau_list) == (0.0, 1, (1.0,))


def test_changing_epochs_alone_rescales_the_schedule():
    c = Config().replace(epochs=10)
    assert (c.warmup_epochs, c.step1, c.step2) == (1, 8, 9)
    pinned = Config().replace(epochs=10, step1=5, step2=7, warmup_epochs=2)
    assert (pinned.warmup_epochs, pinned.step1, pinned.step2) == (2, 5, 7)


def test_cli_accepts_official_and_dashed_spellings():
    parser = build_parser()
    official = config_from_args(parser.parse_args(
        ["train", "-s", "4", "--bs", "64", "--wd", "1e-4", "--num_experts", "2", "--tau_list", "0;2",
         "--mixup_alpha", "0", "--use_norm", "0", "--save_dir", "x"]))
    dashed = config_from_args(parser.parse_args(
        ["train", "--seed", "4", "--batch-size", "64", "--weight-decay", "1e-4", "--num-experts", "2",
         "--tau-list", "0;2", "--mixup-alpha", "0", "--use-norm", "false", "--save-dir", "x"]))
    assert official == dashed
    assert (official.seed, official.batch_size, official.tau_list, official.use_norm) == (4, 64, (0.0, 2.0), False)
    limits = config_from_args(parser.parse_args(["train", "--num_experts", "3", "--tau_list", "limits",
                                                 "--tau_min", "0.5", "--tau_max", "1.5"]))
    assert limits.tau_list == (0.5, 1.0, 1.5)


@pytest.mark.parametrize("overrides, field", [
    ({"mixup_alpha": -0.1}, "mixup_alpha"),
    ({"tau_list": [0, 1]}, "tau_list"),
    ({"num_experts": 2}, "tau_list"),
    ({"warmup_epochs": 300}, "warmup_epochs"),
    ({"step1": 190, "step2": 250}, "step2"),
    ({"batch_size": 0}, "batch_size"),
    ({"dataset": "imagenet-lt"}, "dataset"),
    ({"imb_factor": 0}, "imb_factor"),
    ({"epochs": 0}, "epochs"),
    ({"num_experts": 0, "tau_list": []}, "num_experts"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"device": "tpu"}, "device"),
    ({"learning_rate": 0.1}, "unknown config key"),
    ({"tau_list": "0;x"}, "tau_list"),
    ({"tau_list": "limits", "tau_min": 2, "tau_max": 0}, "tau_min"),
])
def test_bad_values_are_rejected_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        Config().replace(**overrides)


def test_bad_official_configs_are_rejected():
    tree = json.loads(json.dumps(OFFICIAL_CIFAR100_IR100))
    tree["arch"]["args"]["drop_rate"] = 0.1
    with pytest.raises(ConfigError, match="arch.args.drop_rate"):
        cfg.from_official(tree)
    tree = json.loads(json.dumps(OFFICIAL_CIFAR100_IR100))
    tree["data_loader"]["args"]["randaugm"] = True
    with pytest.raises(ConfigError, match="randaugm"):
        cfg.from_official(tree)
    tree = json.loads(json.dumps(OFFICIAL_CIFAR100_IR100))
    tree["arch"]["type"] = "ResNet50Model"
    with pytest.raises(ConfigError, match="arch.type"):
        cfg.from_official(tree)


def _official(change) -> dict:
    tree = json.loads(json.dumps(OFFICIAL_CIFAR100_IR100))
    change(tree)
    return tree


# the reference's configs/mixup/standard_training/config_imagenet_lt_resnext50_bs-experts.json, in short
OFFICIAL_IMAGENET_LT = _official(lambda t: (
    t["arch"].update(type="ResNeXt50Model"), t["arch"]["args"].update(num_classes=1000),
    t["data_loader"].update(type="ImageNetLTDataLoader"),
    t.update(lr_scheduler={"type": "CosineAnnealingLR", "args": {"T_max": 180, "eta_min": 0.0}})))


@pytest.mark.parametrize("tree, keys", [
    (_official(lambda t: t["optimizer"].update(type="Adam", args={"lr": 1e-3})), ["optimizer.type"]),
    (_official(lambda t: t["loss"].update(type="CrossEntropyLoss", args={})), ["loss.type"]),
    (_official(lambda t: t["combiner"].update(mode="cutmix")), ["combiner.mode"]),
    (_official(lambda t: t["combiner"]["mixup"].update(cutmix_alpha=1.0)), ["combiner.mixup.cutmix_alpha"]),
    (_official(lambda t: t["lr_scheduler"].update(type="CosineAnnealingLR", args={"T_max": 200})),
     ["lr_scheduler.type"]),
    (OFFICIAL_IMAGENET_LT, ["data_loader.type", "arch.type", "lr_scheduler.type"]),
    (_official(lambda t: t.pop("combiner")), ["combiner"]),
    (_official(lambda t: t.pop("lr_scheduler")), ["lr_scheduler"]),
])
def test_an_official_config_asking_for_what_is_not_implemented_is_refused_by_key(tree, keys, tmp_path, capsys):
    """Never trained as something else (SGD, the expert loss, mixup, the step schedule, our defaults)."""
    from balpoe.cli import main
    (tmp_path / "official.json").write_text(json.dumps(tree))
    code = main(["train", "-c", str(tmp_path / "official.json"), "--save_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and all(f"{key}:" in err for key in keys) and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_config_files_are_data_not_code(tmp_path):
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.load_file(tmp_path / "evil.yaml")
    with pytest.raises(ConfigError, match="not found"):
        cfg.load_file(tmp_path / "missing.json")


def test_yaml_merge_keys_still_work_and_repeated_keys_do_not(tmp_path):
    (tmp_path / "merge.yaml").write_text("<<: {epochs: 4, warmup_epochs: 1, step1: 2, step2: 3}\nlr: 0.2\n")
    c = cfg.load_file(tmp_path / "merge.yaml")
    assert (c.epochs, c.step2, c.lr) == (4, 3, 0.2)
    (tmp_path / "twice.yaml").write_text("lr: 0.2\nepochs: 4\nlr: 0.3\n")
    with pytest.raises(ConfigError, match=f"^config: {re.escape(str(tmp_path / 'twice.yaml'))} " + r".*\blr\b"):
        cfg.load_file(tmp_path / "twice.yaml")  # the file, and the key given twice
