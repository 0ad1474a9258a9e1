"""Docs are code: every ```bash and ```python block of README.md and docs/usage.md runs here,
in document order, so an example that breaks fails the suite.

A block that cannot run offline on a CPU in seconds (a download, CUDA, SLURM, torchrun, an
install, a research script of minutes) says so right above it, visibly:

    <!-- docs-test: skip (needs network) -->

Everything else runs as written, with one documented exception: sizes. Each command is made
tiny by `tiny()` (the rules in TINY_SIZES and TINY_FLAGS: fewer steps, episodes, updates
and samples; the documented configs, trained for 4 steps; one process where a command
splits episodes over workers, which play the same episodes: tests/test_processes.py and
test_runs.py run those), never by changing what it does; a Python block by TINY_PYTHON.
Commands run in this process (`trajplan.cli.main`, the entry point's own code: no Python
start each), each document in a folder of its own (and its own MINARI_DATASETS_PATH),
with nothing made beforehand: a block uses what the blocks above it made.

The shell is the little the blocks use: `\\` continuations, `#` comments, globs (sorted, as
bash's), and `for VAR in A B C; do ... done`.
"""

from __future__ import annotations

import glob
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/usage.md")
SKIP = re.compile(r"<!-- docs-test: skip \((?P<why>[^)]+)\) -->\s*$")

# sizes: pattern -> its tiny value (any command)
TINY_SIZES = (
    (r"--max-steps \d+", "--max-steps 4"),
    (r"--episodes \d+", "--episodes 2"),
    (r"--horizon \d+", "--horizon 2"),
    (r"--beam-width \d+", "--beam-width 2"),
    (r"--workers \d+", "--workers 1"),  # a child process starts in seconds: the same episodes
)
# per command: the steps it takes, and flags added when the command does not give them
TINY_FLAGS = {
    ("data", "collect"): {"--steps": "3000"},  # a few episodes: 5% held out is one
    ("train",): {"--max-steps": "4", "--set": "plan.beam_width=4"},  # a smaller search
    ("bc",): {"--steps": "20", "--hidden": "8"},
    ("iql",): {"--steps": "20", "--hidden": "16", "--batch-size": "32"},
    ("ensemble",): {"--steps": "5", "--hidden": "16", "--members": "2"},
    ("predict",): {"--horizon": "3", "--starts": "2", "--samples": "2"},
    ("eval",): {"--episodes": "2", "--episode-steps": "2"},
    ("plan",): {"--max-steps": "3"},
}
TINY_PYTHON = ((r"episodes=\d+", "episodes=2, episode_steps=2"), (r"workers=\d+", "workers=1"))


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    skip: str | None  # why, when marked


def blocks(doc: str) -> list[Block]:
    """The fenced bash and python blocks of a markdown file, with their skip markers."""
    text = (ROOT / doc).read_text()
    found = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = SKIP.match(before)
        line = text[: m.start()].count("\n") + 1
        if m.group(1) in ("bash", "python"):
            found.append(Block(doc, line, m.group(1), m.group(2), marker and marker["why"]))
    return found


def commands(script: str) -> list[list[str]]:
    """The commands of a bash block, as argument lists: continuations joined, comments
    dropped, `for` loops unrolled, globs expanded in the working folder (when it matches)."""
    lines = script.replace("\\\n", " ").splitlines()
    out: list[list[str]] = []
    i = 0
    while i < len(lines):
        words = shlex.split(lines[i], comments=True)
        i += 1
        if words[:1] == ["for"]:  # for VAR in A B; do
            var, items = words[1], [w.rstrip(";") for w in words[3 : words.index("do")]]
            body = []
            while lines[i].strip() != "done":
                body.append(lines[i])
                i += 1
            i += 1
            for item in items:
                out += commands("\n".join(b.replace(f"${var}", item) for b in body))
        elif words:
            out.append(words)
    return out


def expand(words: list[str]) -> list[str]:
    out = []
    for w in words:
        matches = sorted(glob.glob(w)) if any(c in w for c in "*?[") else []
        out += matches or [w]
    return out


def tiny(words: list[str]) -> list[str]:
    """A `trajplan` command at tiny size (TINY_SIZES, then TINY_FLAGS' missing flags)."""
    args = words[1:]
    text = shlex.join(args)
    if "--resume" not in args:  # a resume keeps its run's settings
        for pattern, value in TINY_SIZES:
            text = re.sub(pattern, value, text)
    args = shlex.split(text)
    for prefix, flags in TINY_FLAGS.items():
        if tuple(args[: len(prefix)]) == prefix and "--resume" not in args:
            for flag, value in flags.items():
                if flag in args and flag != "--set":
                    args[args.index(flag) + 1] = value
                else:
                    args += [flag, value]
    return args


def run_block(block: Block) -> None:
    where = f"{block.doc}:{block.line}"
    if block.lang == "python":
        code = block.text
        for pattern, value in TINY_PYTHON:
            code = re.sub(pattern, value, code)
        exec(compile(code, where, "exec"), {"__name__": "__docs__"})
        return
    for words in commands(block.text):
        assert words[0] == "trajplan", (
            f"{where}: `{shlex.join(words)}` is not a trajplan command: run it here, or mark "
            "the block <!-- docs-test: skip (why) -->"
        )
        import time as _t

        t0 = _t.perf_counter()
        cli(*expand(tiny(words)))
        print(f"{_t.perf_counter() - t0:6.1f}s {shlex.join(tiny(words))}")


@pytest.fixture
def docs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of its own for each document, with its own MINARI_DATASETS_PATH: the working
    folder while its blocks run."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_tiny_rules_keep_what_a_command_does() -> None:
    assert tiny(["trajplan", "eval", "runs/tt", "--prior", "runs/wbc"]) == [
        "eval", "runs/tt", "--prior", "runs/wbc", "--episodes", "2", "--episode-steps", "2",
    ]  # fmt: skip
    assert tiny(["trajplan", "train", "--resume", "--out", "runs/tt"]) == [
        "train", "--resume", "--out", "runs/tt",
    ]  # fmt: skip
    assert commands("for s in 0 1; do\n  trajplan bc --seed $s  # a comment\ndone\n") == [
        ["trajplan", "bc", "--seed", "0"], ["trajplan", "bc", "--seed", "1"],
    ]  # fmt: skip
    skipped = [b for doc in DOCS for b in blocks(doc) if b.skip]
    assert skipped and all(b.skip.strip() for b in skipped)  # every skip says why


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_every_example_runs_as_written(doc: str, docs_folder: Path) -> None:
    """Each document in a folder of its own, its blocks in order."""
    ran = 0
    for block in blocks(doc):
        if block.skip is None:
            run_block(block)
            ran += 1
    assert ran >= (8 if doc == "README.md" else 2)
