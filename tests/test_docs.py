"""README.md and docs/*.md as tests: every shell and Python block a user would run is run as written, in a
temporary directory, on the tiny random model, and every output shown is compared with what it prints.

How the documents are run (what a writer needs to know):
- Blocks marked ```bash, ```sh, ```shell, ```console and ```python run, in the order of their document; the
  document's blocks share one working directory (a file one block writes, the next can read), the
  variables a shell block exports, and, for Python, the names the earlier Python blocks define.
- The hub id BAAI/bge-reranker-base (the default --model) resolves offline to the tiny random model that
  `build_model(..., seed=0, init_std=0.2)` builds, the one the README builds as tiny-model: an output shown
  for "a tiny random model" is compared as printed. pairs.tsv and pairs.jsonl hold two pairs.
- `pip install ...` is not run (the test environment has every extra); each extra it names must exist.
- `xlmr-np serve` (with `&` or without) starts in the background, is waited for, and stops with its block;
  it listens on a free port, which replaces every 8000 in the block.
- ```console: each `$ command` (continued with a trailing backslash) is run; the lines after it up to the
  next `$` are its output. ```python: an expression followed by a comment line holding a value,
  `x  ⏎  # [1, 2]`, is compared with repr(x). A block right after one of these, preceded by
  `<!-- doc-test: output -->`, is that block's printed output, compared as an excerpt (its lines appear,
  in order, in what was printed).
- In any output shown, `...` stands for any text (a line of just `...`, for any lines).

An HTML comment on the line before a block (blank lines between allowed) says what cannot be compared:
    <!-- doc-test: skip: REASON -->          not run (it needs the hub, the C-MTEB data, a cluster, minutes)
    <!-- doc-test: varies: WHAT -->         numbers (timings, scores of the real model) are not compared
    <!-- doc-test: output -->               the output of the block before (see above)
Blocks of documents owned elsewhere this round are listed in MARKED below instead; the markers move into the
documents as their owners take them over.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import NUMBER
from processes import HUB_REPO, offline_hub

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"bash", "sh", "shell", "console", "python"}
TIMEOUT = 300  # seconds for one block
FILES = {  # what the documents' commands read, in every document's working directory
    "pairs.tsv": "capital of France\tParis is the capital of France.\ncapital of France\tBananas are yellow.\n",
    "pairs.jsonl": '{"query": "capital of France", "document": "Paris is the capital of France."}\n'
    '{"query": "capital of France", "document": "Bananas are yellow."}\n',
}

# (document, a line of the block): ("skip" or "xfail", why). For documents whose owners are rewriting them
# this round; an entry that matches no block fails, so that a fixed block's entry goes with it.
MARKED: dict[tuple[str, str], tuple[str, str]] = {
    ("README.md", "&& python -m pytest -q"): ("skip", "the unit tier itself, which CI runs on its own"),
    ("README.md", 'reranker.rerank("capital of France"'): (
        "xfail",
        "the value shown is bge-reranker-base's ranking (Paris first); the tiny model the documents run on "
        "ranks the bananas first: show the tiny model's value, or say <!-- doc-test: varies: ... -->",
    ),
    ("README.md", "python -m bench --out bench-out"): (
        "skip",
        "minutes of benchmarking on the full-size model against torch and onnxruntime",
    ),
    ("README.md", "xlmr-np verify --endpoint http://127.0.0.1:8000"): (
        "xfail",
        "verify does not read XLMR_NP_API_KEY, which the server section exports, so the server answers 401; "
        "and the output shown (2.22e-15 / 1.63e-16) is not what verify prints now",
    ),
    ("docs/clients.md", "$ nox -r -s clients_frameworks"): (
        "skip",
        "a recorded run: nox installs LangChain and LlamaIndex from the network (minutes)",
    ),
    ("docs/models.md", "--model BAAI/bge-reranker-v2-m3 --max-length 512"): (
        "skip",
        "needs BAAI/bge-reranker-v2-m3 from the hub",
    ),
    ("docs/performance.md", "python -m bench --out bench-out"): (
        "skip",
        "minutes of benchmarking on the full-size model against torch and onnxruntime",
    ),
    ("docs/server.md", "xlmr-np serve: serving 'BAAI/bge-reranker-base' on"): (
        "xfail",
        "the block opens with the server's own line, not a `$ command`, and its ids, dates and timings vary "
        "with no `...` (or <!-- doc-test: varies: ... --> before it)",
    ),
    ("docs/verify.md", "xlmr-np verify --endpoint http://tei:8080"): (
        "skip",
        "endpoints that are examples (http://tei:8080, https://api.example.com)",
    ),
    ("docs/verify.md", "from xlmr_np.verify import compare_scores"): (
        "skip",
        "needs sentence-transformers and the real bge-reranker-base",
    ),
    ("docs/verify.md", "scores = my_engine("): ("skip", "a sketch: my_engine stands for the reader's engine"),
}


# ---------------------------------------------------------------------------------------------------
# Reading the documents


@dataclass
class Block:
    document: str  # relative to the repository root
    line: int  # of the opening fence
    language: str
    text: str
    directive: str = ""  # "skip: ...", "varies: ...", "output" or ""
    output: Block | None = None  # the `<!-- doc-test: output -->` block right after this one

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}-{self.language or 'text'}"


DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the doc-test directive before it, if any."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        directive = DIRECTIVE.search(before)
        blocks.append(
            Block(
                document=str(path.relative_to(ROOT)),
                line=i + 1,
                language=opening.group(1),
                text="\n".join(lines[i + 1 : end]),
                directive=directive.group(1) if directive else "",
            )
        )
        i = end + 1
    for previous, block in zip(blocks, blocks[1:]):
        if block.directive == "output":
            previous.output = block
    return blocks


def all_blocks() -> list[Block]:
    return [b for path in DOCUMENTS for b in read_blocks(path) if b.language in RUNNABLE]


def marked(block: Block) -> tuple[str, str] | None:
    for (document, needle), mark in MARKED.items():
        if document == block.document and needle in block.text:
            return mark
    return None


def test_every_marked_block_exists():
    """A MARKED entry that matches no block is stale (the block was fixed or rewritten): remove it."""
    blocks = all_blocks()
    stale = [key for key in MARKED if not any(key[0] == b.document and key[1] in b.text for b in blocks)]
    assert stale == [], f"MARKED entries that match no block: {stale}"


# ---------------------------------------------------------------------------------------------------
# Comparing what is shown with what is printed


def normalise(line: str, varies: bool) -> str:
    line = line.rstrip()
    return NUMBER.sub("<n>", line) if varies else line


def line_matches(shown: str, printed: str) -> bool:
    """`...` in a shown line stands for any text."""
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, printed) is not None


def shown_matches(shown: list[str], printed: list[str], varies: bool = False, excerpt: bool = False) -> bool:
    """Whether the lines shown are the lines printed (or, as an excerpt, appear among them in order); a shown
    line of just `...` stands for any lines."""
    shown = [normalise(s, varies) for s in shown]
    printed = [normalise(p, varies) for p in printed]
    while shown and not shown[-1]:
        shown.pop()
    while printed and not printed[-1]:
        printed.pop()
    if excerpt:
        shown = ["...", *shown, "..."]

    def match(i: int, j: int) -> bool:
        if i == len(shown):
            return j == len(printed)
        if shown[i] == "...":
            return any(match(i + 1, k) for k in range(j, len(printed) + 1))
        return j < len(printed) and line_matches(shown[i], printed[j]) and match(i + 1, j + 1)

    return match(0, 0)


def test_the_comparison_itself():
    assert shown_matches(["a 1.5", "b"], ["a 1.5", "b", ""])
    assert not shown_matches(["a 1.5"], ["a 1.6"])
    assert shown_matches(["a 1.5"], ["a 1.6"], varies=True)
    assert shown_matches(["took ... s"], ["took 0.7 s"])
    assert shown_matches(["first", "...", "last"], ["first", "x", "y", "last"])
    assert shown_matches(["y"], ["x", "y", "z"], excerpt=True)
    assert not shown_matches(["z", "y"], ["x", "y", "z"], excerpt=True)


# ---------------------------------------------------------------------------------------------------
# Running the blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A bash prelude: state carried between blocks, `xlmr-np serve` in the background until the block ends.
PRELUDE = r"""
set -eo pipefail
source "$DOC_STATE"
__servers=()
trap 'for p in "${__servers[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; export -p > "$DOC_STATE"' EXIT
__serve() {  # start `xlmr-np serve ...` and wait until it says where it serves
    local log; log=$(mktemp)
    "$@" > "$log" 2>&1 &
    __servers+=($!)
    for _ in $(seq 1200); do
        grep -q "on http://" "$log" && return 0
        kill -0 "${__servers[-1]}" 2>/dev/null || { cat "$log" >&2; return 1; }
        sleep 0.1
    done
    cat "$log" >&2; return 1
}
"""


def extras(line: str) -> list[str]:
    return [e.strip() for found in re.findall(r"\[([\w,\s-]+)\]", line) for e in found.split(",")]


def shell_script(text: str, port: int) -> str:
    """The block as the prelude runs it: pip installs checked, servers in the background, 8000 a free port."""
    known = set(importlib.metadata.metadata("xlmr-np").get_all("Provides-Extra") or [])
    out = []
    for line in text.replace("8000", str(port)).split("\n"):
        command = line.split("#")[0].strip() if not line.lstrip().startswith("#") else ""
        if command.startswith("pip install") or command.startswith("python -m pip install"):
            missing = [e for e in extras(command) if e not in known]
            assert not missing, f"{line!r} names extras pyproject.toml lacks: {missing}"
            line = "true  # " + line
        elif command.startswith("xlmr-np serve"):
            command = command.rstrip("&").strip()
            line = "__serve " + command + ("" if "--port" in command else f" --port {port}")
        out.append(line)
    return PRELUDE + "\n".join(out) + "\n"


@dataclass
class Session:
    """One document's working directory, shell state and Python source so far."""

    directory: Path
    env: dict
    python: list[str] = field(default_factory=list)
    done: set = field(default_factory=set)

    def bash(self, text: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", shell_script(text, free_port())],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )


def python_runner(prior: str, code: str) -> str:
    """Run `prior` quietly, then `code` statement by statement, printing a marked repr of each expression
    that the document follows with a value, for the comparison."""
    return f"""
import ast, contextlib, io, sys
names = {{}}
with contextlib.redirect_stdout(io.StringIO()):
    exec(compile({prior!r}, "<earlier blocks>", "exec"), names)
for statement in ast.parse({code!r}).body:
    source = ast.unparse(statement)
    if isinstance(statement, ast.Expr):
        value = eval(compile(ast.Expression(statement.value), "<block>", "eval"), names)
        print("\\x00value " + str(statement.lineno) + " " + repr(value).replace("\\n", "\\\\n"))
    else:
        exec(compile(ast.Module([statement], []), "<block>", "exec"), names)
"""


def expected_values(code: str) -> dict[int, str]:
    """{line of an expression: the value the comment line right after it shows}."""
    lines = code.split("\n")
    values = {}
    for statement in ast.parse(code).body:
        after = statement.end_lineno  # 1-based: lines[after] is the next line
        if isinstance(statement, ast.Expr) and after < len(lines) and lines[after].startswith("# "):
            values[statement.lineno] = lines[after][2:]
    return values


@pytest.fixture(scope="session")
def sessions(tiny_model, tmp_path_factory):
    """document -> Session, each with its own directory and the offline hub."""
    cache = tmp_path_factory.mktemp("doc-hub")
    env = offline_hub(tiny_model[0], cache)
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", PYTHONUNBUFFERED="1")
    env.pop("XLMR_NP_API_KEY", None)
    made: dict[str, Session] = {}

    def get(document: str) -> Session:
        if document not in made:
            directory = tmp_path_factory.mktemp(Path(document).stem)
            for name, text in FILES.items():
                (directory / name).write_text(text, encoding="utf-8")
            state = directory / ".doc-state"
            state.write_text("")
            made[document] = Session(directory, dict(env, DOC_STATE=str(state)))
        return made[document]

    return get


def run(block: Block, session: Session) -> None:
    """Run one block in its document's session; assert it succeeds and prints what the document shows."""
    varies = block.directive.startswith("varies")
    if block.language == "python":
        prior = "\n".join(session.python)
        done = subprocess.run(
            [sys.executable, "-c", python_runner(prior, block.text)],
            cwd=session.directory,
            env=session.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"{block.id} failed:\n{done.stderr[-3000:]}"
        session.python.append(block.text)
        printed = {}
        for line in done.stdout.split("\n"):
            if line.startswith("\x00value "):
                _, number, value = line.split(" ", 2)
                printed[int(number)] = value
        for number, shown in expected_values(block.text).items():
            assert shown_matches([shown], [printed[number]], varies), (
                f"{block.id}, line {number}: shown {shown!r}\nprinted {printed[number]!r}"
            )
        stdout = "\n".join(line for line in done.stdout.split("\n") if not line.startswith("\x00value "))
    elif block.language == "console":
        stdout = ""
        for command, shown in console_commands(block.text):
            done = session.bash(command)
            assert done.returncode == 0, f"{block.id}: $ {command}\nexit {done.returncode}\n{done.stderr[-3000:]}"
            printed = done.stdout.split("\n")
            assert shown_matches(shown, printed, varies), (
                f"{block.id}: $ {command}\nshown:\n" + "\n".join(shown) + "\nprinted:\n" + done.stdout
            )
    else:
        done = session.bash(block.text)
        assert done.returncode == 0, f"{block.id} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        stdout = done.stdout
    if block.output is not None:
        shown = block.output.text.split("\n")
        assert shown_matches(shown, stdout.split("\n"), varies, excerpt=True), (
            f"{block.id}: the output shown at line {block.output.line} is not among what it printed:\n{stdout}"
        )


def console_commands(text: str) -> list[tuple[str, list[str]]]:
    """[(command, the lines shown after it)] of a console block."""
    commands: list[tuple[str, list[str]]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            assert not commands, f"a console block starts with a `$ command`, not {lines[i]!r}"
            i += 1
            continue
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + "\n" + lines[i]
        i += 1
        shown = []
        while i < len(lines) and not lines[i].startswith("$ "):
            shown.append(lines[i])
            i += 1
        commands.append((command, shown))
    return commands


BLOCKS = all_blocks()


def block_params():
    for block in BLOCKS:
        marks = []
        mark = marked(block)
        if block.directive.startswith("skip"):
            mark = ("skip", block.directive.split(":", 1)[-1].strip())
        if mark and mark[0] == "skip":
            marks.append(pytest.mark.skip(reason=mark[1]))
        elif mark:
            marks.append(pytest.mark.xfail(reason=mark[1], strict=True))
        yield pytest.param(block, id=block.id, marks=marks)


@pytest.mark.parametrize("block", list(block_params()))
def test_block_runs_as_written(block, sessions):
    session = sessions(block.document)
    for earlier in BLOCKS:  # what the block builds on: the document's earlier blocks, run first
        if earlier.document != block.document or earlier.line >= block.line or earlier.id in session.done:
            continue
        if earlier.directive.startswith("skip") or (marked(earlier) or ("",))[0] == "skip":
            continue
        session.done.add(earlier.id)
        try:
            run(earlier, session)
        except AssertionError:
            pass  # its own test reports it
    session.done.add(block.id)
    run(block, session)


def test_the_tiny_model_the_documents_use_is_the_readme_one(sessions):
    """The hub id resolves to build_model(seed=0, init_std=0.2), the README's tiny-model."""
    session = sessions("README.md")
    found = subprocess.run(
        [sys.executable, "-c", f"from xlmr_np.hub import resolve_model_dir; print(resolve_model_dir({HUB_REPO!r}))"],
        env=session.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert (Path(found.stdout.strip()) / "model.safetensors").is_file()
    assert shutil.which("xlmr-np", path=session.env["PATH"]) is not None
