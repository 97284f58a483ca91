"""`doctor`: healthy and broken set-ups, run in-process; only the healthy one starts a real Ray."""
from __future__ import annotations

import argparse

import pytest

from conftest import make_cifar_folder
from study import doctor


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    return parser.parse_args(list(argv))


def rows(output: str) -> dict[str, tuple[str, str]]:
    """name -> (status, detail) for every check row; fix lines start with blanks and are skipped."""
    found = {}
    for line in output.splitlines():
        if line[:4].strip() in ("ok", "warn", "FAIL"):
            status, rest = line[:4].strip(), line[6:]
            found[rest[:doctor.NAME_WIDTH].strip()] = (status, rest[doctor.NAME_WIDTH:].strip())
    return found


def fix_of(output: str, name: str) -> str:
    """The fix printed under the row of check `name` ("" when it has none)."""
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line[:4].strip() in ("ok", "warn", "FAIL")
              and line[6:6 + doctor.NAME_WIDTH].strip() == name)
    following = lines[at + 1] if at + 1 < len(lines) else ""
    is_fix = following[:1] == " " and following.strip().startswith("fix:")  # indented under its row
    return following.strip().removeprefix("fix: ") if is_fix else ""


def verdict(output: str) -> str:
    """The last line: how many checks failed."""
    return output.rstrip().splitlines()[-1]


def test_defaults():
    args = parse()
    assert (args.dataset, args.data_dir, args.storage_path, args.address, args.skip_ray) == \
        (None, "./data", "./runs", None, False)


def test_without_a_dataset_every_one_is_looked_at_and_an_absent_one_only_warns(tmp_path, capsys, monkeypatch):
    from balpoe import datasets
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    code = doctor.run(parse("--data-dir", str(tmp_path / "nothing"), "--storage-path", str(tmp_path / "runs"),
                            "--skip-ray"))
    found = rows(capsys.readouterr().out)
    assert code == 0
    assert {name: found[f"data {name}"][0] for name in datasets.DATASET_NAMES} == \
        {name: "ok" if name == "synthetic-lt" else "warn" for name in datasets.DATASET_NAMES}


@pytest.mark.ray
def test_healthy_setup_with_a_real_local_ray(tmp_path, capsys):
    storage = tmp_path / "runs"  # missing: doctor makes it for its probe, then removes it again
    code = doctor.run(parse("--dataset", "synthetic-lt", "--storage-path", str(storage)))
    out = capsys.readouterr().out
    found = rows(out)
    assert code == 0, out
    for name in ("python", "torch", "torchvision", "ray", "optuna", "pandas", "numpy", "ray[default]"):
        assert found[name][0] == "ok", out
    assert found["torch GPUs"][0] in ("ok", "warn")
    assert found["data synthetic-lt"] == ("ok", "generated in memory")
    assert found["storage path"][0] == "ok" and str(storage) in found["storage path"][1]
    assert not storage.exists()  # the probe left nothing behind
    assert found["ray start"][0] == "ok" and found["ray start"][1].startswith("started a local Ray in ")
    assert found["ray GPUs"][0] in ("ok", "warn")
    status, detail = found["ray dashboard"]
    assert status == "ok" and detail.startswith("http://127.0.0.1:") and " answers HTTP " in detail, out
    assert "FAIL" not in out and "fix:" not in out
    assert out.rstrip().endswith("all checks passed")
    import ray
    assert not ray.is_initialized()


def test_generated_cifar_folder_is_present_but_not_official(tmp_path, capsys):
    make_cifar_folder(tmp_path, "cifar10")
    code = doctor.run(parse("--dataset", "cifar10-lt", "--data-dir", str(tmp_path),
                            "--storage-path", str(tmp_path / "runs"), "--skip-ray"))
    out = capsys.readouterr().out
    status, detail = rows(out)["data cifar10-lt"]
    assert (code, status) == (0, "warn"), out
    assert "not the official files" in detail
    assert "ray start" not in out and out.rstrip().endswith("all checks passed")


def test_missing_cifar_fails_with_the_fix(tmp_path, capsys):
    code = doctor.run(parse("--dataset", "cifar100-lt", "--data-dir", str(tmp_path / "nothing"),
                            "--storage-path", str(tmp_path / "runs"), "--skip-ray"))
    out = capsys.readouterr().out
    status, detail = rows(out)["data cifar100-lt"]
    assert (code, status) == (1, "FAIL"), out
    assert "absent" in detail and "cifar-100-python" in detail
    fix = fix_of(out, "data cifar100-lt")  # what to copy (it works without internet), where to point, the presets
    assert "cifar-100-python/" in fix and "--data-dir FOLDER" in fix and "--preset fmnist" in fix, out
    assert not (tmp_path / "nothing").exists()  # doctor never downloads
    assert verdict(out).startswith("1 check failed"), out


def test_unwritable_storage_path_fails(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = doctor.run(parse("--dataset", "synthetic-lt", "--storage-path", str(blocker / "runs"), "--skip-ray"))
    out = capsys.readouterr().out
    status, detail = rows(out)["storage path"]
    assert (code, status) == (1, "FAIL"), out
    assert f"{blocker} " in detail, detail  # the file in the way
    assert "--storage-path" in fix_of(out, "storage path"), out


def test_a_bucket_is_checked_as_studies_check_it(object_store, capsys):
    storage = object_store.bucket("doctor-runs") + "/runs"
    assert doctor.run(parse("--dataset", "synthetic-lt", "--storage-path", storage, "--skip-ray")) == 0
    status, detail = rows(capsys.readouterr().out)["storage path"]
    assert status == "ok" and detail.startswith(f"{storage} ") and "object store" in detail, detail
    code = doctor.run(parse("--dataset", "synthetic-lt", "--storage-path", "s3://no-such-bucket/runs", "--skip-ray"))
    out = capsys.readouterr().out
    assert code == 1
    assert rows(out)["storage path"][0] == "FAIL" and "'no-such-bucket'" in rows(out)["storage path"][1], out


def test_two_failures_are_counted(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = doctor.run(parse("--dataset", "cifar10-lt", "--data-dir", str(tmp_path),
                            "--storage-path", str(blocker / "runs"), "--skip-ray"))
    assert code == 1
    assert verdict(capsys.readouterr().out).startswith("2 checks failed")


def test_fashion_mnist_absent_fails_with_the_apt_fix(tmp_path, capsys, monkeypatch):
    from balpoe import datasets
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    code = doctor.run(parse("--dataset", "fashion-mnist-lt", "--data-dir", str(tmp_path),
                            "--storage-path", str(tmp_path / "runs"), "--skip-ray"))
    out = capsys.readouterr().out
    assert (code, rows(out)["data fashion-mnist-lt"][0]) == (1, "FAIL"), out
    assert "apt-get install dataset-fashion-mnist" in fix_of(out, "data fashion-mnist-lt"), out


def test_a_missing_torch_is_a_fail_row_not_a_traceback(tmp_path):
    """`doctor` imports nothing heavy before its checks: with torch unimportable it still reports."""
    import subprocess
    import sys
    script = ("import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
              "from study.run import main\n"
              f"sys.exit(main(['doctor', '--dataset', 'synthetic-lt', '--storage-path', {str(tmp_path)!r}, '--skip-ray']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert rows(done.stdout)["torch"][0] == "FAIL" and "pip install -e ." in fix_of(done.stdout, "torch"), done.stdout
    assert rows(done.stdout)["data synthetic-lt"][0] == "ok"
