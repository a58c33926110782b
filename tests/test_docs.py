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
- `xlmr-np serve` (with `&`, `& SERVER=$!` or neither) starts in the background, is waited for, prints
  what it said on starting, and stops with its block (a ```console block's server serves the commands after
  it); it listens on a free port, which replaces every 8000 in the block and in what the block prints.
- ```console: each `$ command` (continued with a trailing backslash) is run; the lines after it up to the
  next `$` are its output. ```python: an expression followed by a comment line holding a value,
  `x  ⏎  # [1, 2]`, is compared with repr(x). A block right after one of these, preceded by
  `<!-- doc-test: output -->`, is that block's printed output, compared as an excerpt (its lines appear,
  in order, in what was printed); `<!-- doc-test: output of: TEXT -->` makes it the output of the last
  block before it that holds TEXT.
- In any output shown, `...` stands for any text (a line of just `...`, for any lines).

An HTML comment on the line before a block (blank lines between allowed) says what cannot be compared:
    <!-- doc-test: skip: REASON -->     not run: it needs the hub or the C-MTEB datasets (the only reasons)
    <!-- doc-test: varies: WHAT -->    ids, numbers (timings, scores) and, in Python values, strings are not
                                       compared, the rest is (the real model's ranking, on the tiny one)
    <!-- doc-test: output -->          the output of the block before (see above)
A block that cannot run here for another reason (minutes on the full-size model, placeholders, an
interactive program, an example endpoint), or one of a document owned elsewhere this round, is listed in
MARKED below with its reason.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import NUMBER
from processes import HUB_REPO, offline_hub

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"bash", "sh", "shell", "console", "python"}
TIMEOUT = 300  # seconds for one block
FILES = {  # what the documents' commands read, in every document's working directory
    "pairs.tsv": "capital of France\tParis is the capital of France.\ncapital of France\tBananas are yellow.\n",
    "pairs.jsonl": '{"query": "capital of France", "document": "Paris is the capital of France."}\n'
    '{"query": "capital of France", "document": "Bananas are yellow."}\n',
}

# (document, a line of the block): ("skip" or "xfail", why). The blocks that cannot run here for a reason other
# than the hub or the C-MTEB datasets (which a document's own skip comment gives), and blocks of documents
# owned elsewhere this round; an entry that matches no block fails, so that a fixed block's entry goes with it.
FULL_SIZE = "minutes on the full-size model"
MARKED: dict[tuple[str, str], tuple[str, str]] = {
    ("README.md", "xlmr-np verify --endpoint http://tei:8080"): (
        "skip",
        "an example endpoint (a TEI server named tei); the first steps run verify against xlmr-np serve",
    ),
    ("README.md", "python -m bench --out bench-out"): (
        "skip",
        f"{FULL_SIZE}: benchmarking against torch and onnxruntime (tests/test_bench.py runs the bench on a tiny one)",
    ),
    ("README.md", "nox -s lint"): ("skip", "nox builds a virtual environment per session (minutes); .ci/run is CI"),
    ("docs/clients.md", "$ nox -r -s clients_frameworks"): (
        "skip",
        "a recorded run: nox installs LangChain and LlamaIndex from the network (minutes)",
    ),
    ("docs/evaluation.md", "python tools/eval_throughput.py --model full-random"): (
        "skip",
        f"{FULL_SIZE}: builds the 1.1 GB random model and times it",
    ),
    ("docs/evaluation.md", "xlmr-np eval --model full-random"): (
        "skip",
        f"{FULL_SIZE}: the one the blocks before build",
    ),
    ("docs/evaluation.md", "python tools/shard_overhead.py --model full-random"): (
        "skip",
        "writes 400,000 pairs and scores them on the full-size model (hours)",
    ),
    ("docs/gpu.md", "pip install 'xlmr-np[gpu]'"): ("skip", "needs an NVIDIA GPU and CuPy"),
    ("docs/gpu.md", 'device="cuda"'): ("skip", "needs an NVIDIA GPU and CuPy"),
    ("docs/gpu.md", "tools/gpu_check.py --out gpu-check"): (
        "skip",
        "needs an NVIDIA GPU, CuPy and torch with CUDA (tests/test_bench.py runs gpu_check --dry-run on the CPU)",
    ),
    ("docs/inspection.md", '--model M "QUERY" "DOCUMENT"'): (
        "skip",
        "a synopsis: M, QUERY, DOCUMENT and the brackets are placeholders",
    ),
    ("docs/inspection.md", "jupyter lab notebooks/"): (
        "skip",
        "JupyterLab is an interactive server; tests/test_notebooks.py executes every notebook",
    ),
    ("docs/inspection.md", "python tools/execute_notebooks.py"): (
        "skip",
        "rewrites the checkout's notebooks (minutes); tests/test_notebooks.py executes every notebook",
    ),
    ("docs/performance.md", "python -m bench --out bench-out"): (
        "skip",
        f"{FULL_SIZE}: benchmarking against torch and onnxruntime (tests/test_bench.py runs the bench on a tiny one)",
    ),
    ("docs/performance.md", "python -m bench.gemm_floor ~/.cache/xlmr-np/full-random"): (
        "skip",
        f"{FULL_SIZE}, which python -m bench builds (tests/test_bench.py runs gemm_floor on a tiny one)",
    ),
    ("docs/performance.md", "python -m bench.profile_forward ~/.cache/xlmr-np/full-random"): (
        "skip",
        f"{FULL_SIZE}, which python -m bench builds (tests/test_bench.py runs profile_forward on a tiny one)",
    ),
    ("docs/performance.md", "python -m bench.ops_speed"): (
        "skip",
        "minutes of timing at bge-reranker-base's shapes (tests/test_bench.py runs it once, checking each op)",
    ),
    ("docs/reliability.md", "cp new/model.safetensors models/m/"): (
        "skip",
        "a recipe: new/ and models/m/ stand for the reader's directories (tests/test_serve_limits.py replaces "
        "a served model's file both ways)",
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
    ("docs/verify.md", "tests/test_verify_peers.py -q -s -p no:cacheprovider"): (
        "skip",
        "runs the parity tier's peers (minutes), from the repository's root; the parity tier runs them",
    ),
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
    for k, block in enumerate(blocks):
        if block.directive == "output" and k > 0:
            blocks[k - 1].output = block
        elif block.directive.startswith("output of:"):  # the output of an earlier block, named by its text
            needle = block.directive.split(":", 1)[1].strip()
            sources = [b for b in blocks[:k] if needle in b.text]
            assert sources, f"{block.id}: no block before it holds {needle!r}"
            sources[-1].output = block
    return blocks


def all_blocks() -> list[Block]:
    return [b for path in DOCUMENTS for b in read_blocks(path) if b.language in RUNNABLE]


def marked(block: Block) -> tuple[str, str] | None:
    for (document, needle), mark in MARKED.items():
        if document == block.document and needle in block.text:
            return mark
    return None


def test_documents_skip_only_what_needs_the_hub_or_the_cmteb_data():
    """A document's own skip comment is for a block that needs the hub or the C-MTEB datasets; a block that
    cannot run here for another reason (minutes on the full-size model, placeholders, an interactive
    program, an example endpoint) is listed in MARKED with its reason."""
    skips = [(b.id, b.directive) for b in all_blocks() if b.directive.startswith("skip")]
    other = [(block, why) for block, why in skips if "hub" not in why and "C-MTEB" not in why]
    assert other == [], f"skip comments for other reasons (move them to MARKED): {other}"


def indented_code(path: Path) -> list[str]:
    """Lines that start an indented code block (four spaces after a blank line, outside fences and lists)."""
    found, fenced, previous = [], False, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and not previous.strip() and re.match(r"    +[^\s\-*\d]", line):
            found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        previous = line
    return found


def test_commands_are_in_fenced_blocks():
    """An indented code block is never run: a command or an output belongs in a fenced block."""
    assert [line for path in DOCUMENTS for line in indented_code(path)] == []


def test_every_marked_block_exists():
    """A MARKED entry that matches no block is stale (the block was fixed or rewritten): remove it."""
    blocks = all_blocks()
    stale = [key for key in MARKED if not any(key[0] == b.document and key[1] in b.text for b in blocks)]
    assert stale == [], f"MARKED entries that match no block: {stale}"


# ---------------------------------------------------------------------------------------------------
# Comparing what is shown with what is printed


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STRING = re.compile(r"'(?:[^'\\]|\\.)*'(:?)")  # a quoted string in a Python repr, and the colon of a key


def normalise(line: str, varies: bool) -> str:
    """Under `varies`, ids (UUIDs) and numbers are not compared."""
    line = line.rstrip()
    return NUMBER.sub("<n>", UUID.sub("<id>", line)) if varies else line


def python_value(value: str, varies: bool) -> str:
    """A Python value as compared: under `varies`, its string values too (a dict's keys are kept), so that a
    ranking of the real model shown in a document is compared for its structure on the tiny one."""
    return STRING.sub(lambda m: m.group(0) if m.group(1) else "<s>", value) if varies else value


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
    uuid, other = "dadb2a3d-c261-49cc-9f01-9d5aecd140a3", "0102a972-956c-4c9c-8a31-909b0820373c"
    assert shown_matches([f'{{"id": "{uuid}", "n": 2}}'], [f'{{"id": "{other}", "n": 3}}'], varies=True)
    assert not shown_matches([f'"id": "{uuid}"'], [f'"id": "{other}"'])
    shown, printed = "[{'index': 0, 'document': 'Paris is ...'}]", "[{'index': 1, 'document': 'Bananas.'}]"
    assert python_value(shown, True) == "[{'index': 0, 'document': <s>}]"
    assert shown_matches([python_value(shown, True)], [python_value(printed, True)], varies=True)
    assert not shown_matches([python_value(shown, False)], [python_value(printed, False)], varies=True)


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
__serve() {  # start `xlmr-np serve ...`, wait until it says where it serves, print what it said
    local log; log=$(mktemp)
    "$@" > "$log" 2>&1 &
    __servers+=($!)
    for _ in $(seq 1200); do
        grep -q "on http://" "$log" && { cat "$log"; return 0; }
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
            serve, _, after = command.partition("&")  # `xlmr-np serve ... & SERVER=$!`: the pid in SERVER
            serve = serve.strip()
            line = "__serve " + serve + ("" if "--port" in serve else f" --port {port}")
            pid = re.fullmatch(r"\s*(\w+)=\$!\s*", after)
            assert pid or not after.strip(), f"{line!r}: after `xlmr-np serve ... &` only `VAR=$!` is understood"
            if pid:
                line += f"; {pid.group(1)}=${{__servers[-1]}}"
        out.append(line)
    return PRELUDE + "\n".join(out) + "\n"


def run_bash(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """bash -c script in a process group of its own: on a timeout the whole group (servers included) is
    killed, not bash alone."""
    with subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            stderr += f"\n(killed after {TIMEOUT} s)"
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@dataclass
class Session:
    """One document's working directory, shell state and Python source so far."""

    directory: Path
    env: dict
    python: list[str] = field(default_factory=list)
    done: set = field(default_factory=set)

    def bash(self, text: str, port: int | None = None) -> subprocess.CompletedProcess:
        return run_bash(shell_script(text, port or free_port()), self.directory, self.env)


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
            compared = [python_value(shown, varies)], [python_value(printed[number], varies)]
            assert shown_matches(*compared, varies), (
                f"{block.id}, line {number}: shown {shown!r}\nprinted {printed[number]!r}"
            )
        stdout = "\n".join(line for line in done.stdout.split("\n") if not line.startswith("\x00value "))
    elif block.language == "console":
        # one script, so that a server started by `$ xlmr-np serve ... &` serves the commands after it
        commands = console_commands(block.text)
        port = free_port()
        done = session.bash("\n".join(f"printf '{SEPARATOR}\\n'\n{command}" for command, _ in commands), port)
        outputs = done.stdout.replace(str(port), "8000").split(SEPARATOR + "\n")[1:]
        failed = commands[len(outputs) - 1][0] if outputs else "(before the first command)"
        assert done.returncode == 0, f"{block.id}: $ {failed}\nexit {done.returncode}\n{done.stderr[-3000:]}"
        for (command, shown), printed in zip(commands, outputs):
            assert shown_matches(shown, printed.split("\n"), varies), (
                f"{block.id}: $ {command}\nshown:\n" + "\n".join(shown) + "\nprinted:\n" + printed
            )
        stdout = done.stdout
    else:
        done = session.bash(block.text)
        assert done.returncode == 0, f"{block.id} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        stdout = done.stdout
    if block.output is not None:
        shown = block.output.text.split("\n")
        assert shown_matches(shown, stdout.split("\n"), varies, excerpt=True), (
            f"{block.id}: the output shown at line {block.output.line} is not among what it printed:\n{stdout}"
        )


SEPARATOR = "\x1e"  # between the outputs of a console block's commands


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
            command += "\n" + lines[i]
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


@pytest.mark.integration
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


@pytest.mark.integration
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
