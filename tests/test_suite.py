"""The test suite's own rules, read from its source (unit tier): every test asserts something, and no test
module imports another (what they share is in helpers.py and conftest.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
MODULES = sorted(TESTS.glob("*.py"))
# calls that check: pytest.raises / fail / warns, and assert_* / check_* of numpy, xlmr_np.testing or helpers
CHECKING = ("raises", "fail", "warns", "deprecated_call")


def called_names(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            names.add(f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")
    return names


def asserts_directly(node: ast.AST) -> bool:
    checking = {n for n in called_names(node) if n in CHECKING or n.startswith(("assert", "check"))}
    return bool(checking) or any(isinstance(sub, ast.Assert) for sub in ast.walk(node))


def functions() -> dict[str, list[tuple[Path, ast.FunctionDef]]]:
    """Every function defined in tests/, by name."""
    found: dict[str, list[tuple[Path, ast.FunctionDef]]] = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.setdefault(node.name, []).append((path, node))
    return found


def test_every_test_asserts_something():
    """A test checks a value: an assert, pytest.raises/fail/warns, an assert_*/check_* helper, or a function of
    tests/ that does one of these (followed through the calls it makes)."""
    defined = functions()
    checking = {name for name, defs in defined.items() if any(asserts_directly(node) for _, node in defs)}
    grew = True
    while grew:  # a helper that calls a checking helper checks
        more = {
            name
            for name, defs in defined.items()
            if name not in checking and any(called_names(node) & checking for _, node in defs)
        }
        checking |= more
        grew = bool(more)
    silent = [
        f"{path.name}:{node.lineno} {name}"
        for name, defs in defined.items()
        if name.startswith("test") and name not in checking
        for path, node in defs
    ]
    assert silent == [], f"tests that assert nothing: {silent}"


def test_the_check_itself_finds_a_silent_test():
    silent = ast.parse("def test_x():\n    x = 1 + 1\n").body[0]
    loud = ast.parse("def test_y():\n    with pytest.raises(ValueError):\n        int('a')\n").body[0]
    assert not asserts_directly(silent) and asserts_directly(loud)


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_no_test_module_imports_another():
    imports = {
        path.name: sorted(
            name
            for name in imported_modules(ast.parse(path.read_text(encoding="utf-8")))
            if name.lstrip(".").removeprefix("tests.").startswith("test_")
        )
        for path in MODULES
    }
    assert {module: names for module, names in imports.items() if names} == {}


def test_ci_runs_every_tier_with_torch_required_and_the_readmes_test_command():
    """.ci/run runs the unit tier by the command the README gives a developer, then the other tiers, each
    with XLMR_NP_REQUIRE_TORCH=1 (a missing torch is a failure there, not a skip)."""
    root = TESTS.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    develop = re.search(r"To develop: `pip install -e '\.\[test\]' && (python -m pytest[^`]*)`", readme)
    assert develop, "the README's 'To develop:' command"
    steps = [line.split("#")[0].strip() for line in (root / ".ci" / "run").read_text().splitlines()]
    required = next(i for i, s in enumerate(steps) if s.startswith("export") and "XLMR_NP_REQUIRE_TORCH=1" in s)
    tiers = [s for s in steps[required:] if s.startswith("step python -m pytest")]
    assert tiers[0] == f"step {develop.group(1)}", tiers
    assert {t.rsplit(" -m ", 1)[1].strip() for t in tiers[1:]} >= {"integration", "parity"}, tiers
