"""The live results page on Ray Serve: the real command on a real local Ray, opened in headless
Chromium, with the security rules (404 outside the storage path, escaped values) and the promise
that the page never takes a CPU from a trial."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import SMOKE, assert_refused, printed_command, run_cli
from results import load_experiment

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the page is reached directly
INJECTED = "<img src=x onerror=alert(1)>"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with OPENER.open(url, timeout=30) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, option, shown", [  # what is refused, and the value or the fix the message shows
    (["--port", "70000"], "--port", ["65535", "(got 70000)"]),
    (["--refresh", "0"], "--refresh", ["(got 0)"]),
    (["--detach"], "--detach/--stop", ["--address"]),
    (["nope"], "experiment 'nope'", ["{storage}/nope", "--storage-path"]),
])
def test_dashboard_rejects_bad_input_before_ray_starts(argv, option, shown, tmp_path, capsys):
    import ray
    code, _ = run_cli(["dashboard", *argv, "--storage-path", str(tmp_path)])
    assert code == 2
    assert_refused(capsys.readouterr().err, option, *(part.format(storage=tmp_path) for part in shown))
    assert not ray.is_initialized()


def test_a_taken_port_is_named_before_ray_starts(tmp_path, capsys):
    import ray
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _ = run_cli(["dashboard", "--storage-path", str(tmp_path), "--port", str(port)])
        assert code == 2
        assert_refused(capsys.readouterr().err, "--port", f"127.0.0.1:{port} ")
        code, _ = run_cli(["baseline", *SMOKE, "--storage-path", str(tmp_path), "--serve-results",
                           "--results-port", str(port)])
        assert code == 2
        assert_refused(capsys.readouterr().err, "--results-port", f"127.0.0.1:{port} ")
    assert not ray.is_initialized()


@pytest.fixture
def storage(tmp_path, smoke_search, smoke_baseline) -> Path:
    """Experiments to serve, plus traps: a folder whose name is markup, a settings value that is
    markup, and a symlink to an experiment outside the storage path."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(smoke_search.experiment, root / "search-alpha_tau")
    shutil.copytree(smoke_baseline.experiment, root / "baseline")
    evil = shutil.copytree(smoke_baseline.experiment, root / INJECTED)
    settings = json.loads((evil / "study.json").read_text())
    settings["versions"]["command"] = f"python -m study.run baseline --name '{INJECTED}'"
    (evil / "study.json").write_text(json.dumps(settings))
    outside = shutil.copytree(smoke_baseline.experiment, tmp_path / "outside")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    return root


@pytest.mark.ray
def test_results_page_serves_tables_figures_and_nothing_else(storage, tmp_path):
    port = free_port()
    before = folder_digest(storage)
    command = [sys.executable, "-m", "study.run", "dashboard", "search-alpha_tau", "--storage-path", str(storage),
               "--port", str(port), "--num-cpus", "1", "--refresh", "5"]
    page = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    watchdog = threading.Timer(240, page.kill)
    watchdog.start()
    try:
        seen = []
        for line in page.stdout:
            seen.append(line)
            if line.startswith("Ctrl-C stops the page"):
                break
        else:
            pytest.fail("the page did not come up:\n" + "".join(seen))
        base = f"http://127.0.0.1:{port}"
        assert f"results page: {base}/experiments/search-alpha_tau  ({storage})\n" in seen
        assert any(line.startswith("Ray dashboard: http://127.0.0.1:") for line in seen)

        status, body, kind = get(f"{base}/api/experiments")
        index = {row["name"]: row for row in json.loads(body)}
        assert status == 200 and kind == "application/json"
        assert set(index) == {"search-alpha_tau", "baseline", INJECTED}  # not the symlink
        assert index["baseline"]["finished"] == 2 and index["baseline"]["complete"] is True
        exp = load_experiment(storage / "search-alpha_tau")
        status, body, _ = get(f"{base}/api/experiments/search-alpha_tau/trials")
        trials = json.loads(body)
        assert status == 200 and [t["trial_id"] for t in trials] == exp.sorted_trials()["trial_id"].tolist()
        assert [t["val_balanced_acc"] for t in trials] == exp.sorted_trials()["val_balanced_acc"].tolist()
        status, body, _ = get(f"{base}/api/experiments/search-alpha_tau/epochs")
        assert status == 200 and len(json.loads(body)) == len(exp.epochs)

        for path in ("/experiments/..%2F..%2Fetc%2Fpasswd", "/experiments/%2Fetc", "/experiments/..",
                     "/experiments/linked", "/api/experiments/linked/trials", "/api/experiments/nope/epochs",
                     "/api/experiments/search-alpha_tau/secrets", "/experiments/search-alpha_tau/figures/x.png",
                     "/experiments/search-alpha_tau/figures/..%2F..%2Fstudy.json",
                     "/experiments/baseline/figures/alpha_effect.png"):
            status, body, _ = get(base + path)
            assert status == 404, path
            assert b"root:" not in body and b"kind" not in body

        status, body, _ = get(base + "/")
        assert status == 200 and INJECTED.encode() not in body
        assert b"&lt;img src=x onerror=alert(1)&gt;" in body
        status, body, _ = get(base + "/experiments/" + urllib.request.quote(INJECTED, safe=""))
        assert status == 200 and INJECTED.encode() not in body and b"onerror=alert(1)&gt;" in body

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("no Chromium here (scripts/test.sh installs Debian's chromium): browser check not run")
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                              f"{base}/experiments/search-alpha_tau"], capture_output=True, text=True,
                             timeout=120).stdout
        trials_table = dom.split("Trials (best first)</h2>", 1)[1].split("</tbody>", 1)[0]
        assert trials_table.count("<tr>") == 1 + len(exp.trials)  # the header and one row per trial
        sources = re.findall(r'<img[^>]* src="([^"]+)"', dom)
        assert len(sources) == 8  # every figure applies to a search
        for source in sources:
            status, body, kind = get(f"{base}/experiments/" + source.replace("&amp;", "&"))
            assert status == 200 and kind == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
        assert '<meta http-equiv="refresh" content="5">' in dom
    finally:
        page.send_signal(signal.SIGTERM)
        out = page.communicate(timeout=120)[0]
        watchdog.cancel()
    assert page.returncode == 0 and "results page stopped" in out, out
    assert "(raylet)" not in out  # our words only
    with pytest.raises(OSError):
        OPENER.open(f"http://127.0.0.1:{port}/", timeout=5)
    assert folder_digest(storage) == before  # read-only


@pytest.mark.ray
def test_detach_leaves_the_page_on_a_standing_cluster_until_stop(tmp_path):
    """A cluster whose processes outlive the command's driver (as `ray start` makes one; the test's own
    `Cluster` stops only what it started, never a user's Ray)."""
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    study = [sys.executable, "-m", "study.run", "dashboard", "--storage-path", str(tmp_path),
             "--address", cluster.address]
    try:
        detached = subprocess.run([*study, "--detach", "--port", str(port)], capture_output=True, text=True,
                                  env=env, timeout=180)
        assert detached.returncode == 0, detached.stdout + detached.stderr
        stop = printed_command(detached.stdout, "study.run")  # the command that stops it
        assert stop[1:] == ["-m", "study.run", "dashboard", "--stop", "--address", cluster.address], detached.stdout
        status, body, _ = get(f"http://127.0.0.1:{port}/api/experiments")  # the driver is gone, the page is not
        assert (status, json.loads(body)) == (200, [])
        stopped = subprocess.run([*study, "--stop"], capture_output=True, text=True, env=env, timeout=180)
        assert stopped.returncode == 0 and f"results page stopped on {cluster.address}" in stopped.stdout
        with pytest.raises(OSError):
            OPENER.open(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        cluster.shutdown()
