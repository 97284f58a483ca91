"""Rules for the test suite itself, checked statically (no Ray is started here)."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def ray_init_calls(tree: ast.AST) -> list[ast.Call]:
    """Every `ray.init(…)` call in `tree`, and `init(…)` where `from ray import init` brought it in; a Python
    program in a string (a `python -c` script) is searched too."""
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "ray" for alias in node.names if alias.name == "init"}
    rays = {"ray"} | {alias.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
                      for alias in node.names if alias.name == "ray" and alias.asname}
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr == "init" and isinstance(func.value, ast.Name)
                    and func.value.id in rays) or (isinstance(func, ast.Name) and func.id in imported):
                calls.append(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "init(" in node.value:
            try:
                inner = ray_init_calls(ast.parse(node.value))
            except SyntaxError:  # prose, not a program
                continue
            for call in inner:
                call.lineno += node.lineno - 1  # a line of this file
            calls += inner
    return calls


def joins_no_running_ray(call: ast.Call) -> bool:
    """Whether the call starts a Ray of its own: `address="local"`, given as such."""
    return any(keyword.arg == "address" and isinstance(keyword.value, ast.Constant) and keyword.value.value == "local"
               for keyword in call.keywords)


def offending_ray_inits(source: str) -> list[int]:
    """The lines of the `ray.init` calls in `source` that could join a Ray another program started here."""
    return sorted({call.lineno for call in ray_init_calls(ast.parse(source)) if not joins_no_running_ray(call)})


def test_every_ray_init_in_the_tests_starts_its_own_ray():
    """Without `address="local"`, `ray.init` joins a Ray that another program (a user's study, another test run)
    started on this machine, and the test then runs in it, or shuts it down."""
    found = {path.name: offending_ray_inits(path.read_text()) for path in sorted(TESTS.glob("*.py"))
             if path.name != Path(__file__).name}  # whose examples break the rule on purpose
    offending = {name: lines for name, lines in found.items() if lines}
    assert not offending, f'ray.init without address="local" (file: lines): {offending}'


def test_the_ray_init_rule_catches_what_it_should():
    assert offending_ray_inits('import ray\nray.init(address="local", num_cpus=2)\n') == []
    assert offending_ray_inits("import ray\nray.init(num_cpus=2)\n") == [2]
    assert offending_ray_inits('import ray\nray.init(address="auto")\n') == [2]
    assert offending_ray_inits("import ray\nray.init(**options)\n") == [2]  # what it passes cannot be seen
    assert offending_ray_inits("from ray import init as start\nstart()\n") == [2]
    assert offending_ray_inits("import ray as r\nr.init()\n") == [2]
    assert offending_ray_inits('probe = "import ray; ray.init(num_cpus=1)"\n') == [1]  # a `python -c` script
    assert offending_ray_inits('"""a later `ray.init(address=...)` joins it"""\n') == []  # prose
