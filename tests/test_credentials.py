"""No part of a database password in anything the toolkit prints, records or shows, whatever the shape of the
`--optuna-storage` URL: a `/`, a space, `:` or an `@` in the password, percent-encoded or not, or a password
given as a query parameter. Nothing here needs a database: the port is one where nothing listens."""
from __future__ import annotations

import html
import json
import re
import sys
from urllib.parse import unquote

import pytest

from balpoe.config import Config
from conftest import SMOKE
from results.app import ResultsSite
from results.storage_urls import hide_password, shown_url
from results.settings import StudySettings
from search_spaces import get_space, resolve_ranges
from study.run import main
from study.settings import versions
from test_optuna_storage import free_port

HOST = "127.0.0.1"
SHAPES = {  # the part of the URL between :// and the host (the userinfo), or a query after the database
    "slash": ("me:s3cr/etPW@", ""),
    "space": ("me:my secretPW@", ""),
    "colon": ("me:pa:ss:w0rdX@", ""),
    "encoded at": ("me:pa%40ssw0rdX@", ""),
    "at": ("me:pa@ssw0rdX@", ""),
    "query": ("me@", "?sslmode=disable&password=qu3ry pw9"),
}


def url_of(shape: str, port: int) -> str:
    userinfo, query = SHAPES[shape]
    return f"postgresql://{userinfo}{HOST}:{port}/studies{query}"


def secrets(shape: str) -> list[str]:
    """The password as written and decoded, and each piece of it of 3 characters or more."""
    userinfo, query = SHAPES[shape]
    password = query.partition("password=")[2] if query else userinfo[:-1].split(":", 1)[1]
    forms = {password, unquote(password)}
    return sorted(forms | {piece for form in forms for piece in re.split(r"[/@ :]", form) if len(piece) >= 3})


def leaked(shape: str, text: str) -> list[str]:
    return [secret for secret in secrets(shape) if secret in text]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_url_is_shown_with_its_user_and_host_and_no_part_of_the_password(shape):
    shown = shown_url(url_of(shape, 5432))
    assert not leaked(shape, shown)
    assert shown.startswith("postgresql://me") and f"@{HOST}:5432/studies" in shown
    assert not leaked(shape, hide_password(f"python -m study.run search --optuna-storage {url_of(shape, 5432)} -n x"))


def test_a_url_without_a_password_is_shown_as_it_is():
    for url in ("postgresql://me@db.lab:5432/optuna", "sqlite:////runs/a@b:c/optuna.db", "journal:///x:y@z.log"):
        assert shown_url(url) == url == hide_password(url)


@pytest.mark.parametrize("shape", SHAPES)
def test_what_a_driver_says_is_scrubbed_of_every_piece_of_the_password(shape):
    """A driver that misparses a URL quotes pieces of it (`failed to resolve host 'ssw0rdX@127.0.0.1'`)."""
    url = url_of(shape, 5432)
    said = "; ".join([f"could not parse {url}", *(f"failed to resolve host '{s}@{HOST}'" for s in secrets(shape))])
    assert not leaked(shape, hide_password(said, url))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_refused_search_prints_no_part_of_the_password(shape, tmp_path, capsys):
    import ray
    code = main(["search", *SMOKE, "--optuna-storage", url_of(shape, free_port()), "--storage-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--optuna-storage" in err and "Traceback" not in err and not ray.is_initialized()
    assert not leaked(shape, err)


@pytest.mark.parametrize("shape", [shape for shape in SHAPES if shape != "at"])  # "at" is refused as it is given
def test_the_recorded_command_the_report_and_the_live_page_show_no_part_of_the_password(shape, tmp_path, capsys,
                                                                                         monkeypatch):
    """study.json keeps the URL as given (resume reopens it); the command it records, `report` (its page and
    the warning that the database does not answer) and the live page show it without the password."""
    url = url_of(shape, free_port())
    monkeypatch.setattr(sys, "argv", ["study.run", "search", "--optuna-storage", url, "--name", "creds"])
    folder = tmp_path / "creds"
    folder.mkdir()
    StudySettings(kind="search", name="creds", storage_path=str(tmp_path), base=Config(), max_t=200,
                  grace_period=165, space="alpha_tau", ranges=resolve_ranges(get_space("alpha_tau"), {}),
                  startup_trials=2, optuna_storage=url, versions=versions()).save(folder)
    recorded = json.loads((folder / "study.json").read_text())
    assert recorded["optuna_storage"] == url and not leaked(shape, recorded["versions"]["command"])
    assert recorded["versions"]["command"].endswith(f"--optuna-storage {shown_url(url)} --name creds")

    assert main(["report", "creds", "--storage-path", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    page = html.unescape((folder / "report" / "index.html").read_text())
    assert shown_url(url) in page and not leaked(shape, out + err + page)
    site = ResultsSite(tmp_path)
    site.snapshot("creds")
    assert not leaked(shape, html.unescape(site.experiment_html("creds")))
