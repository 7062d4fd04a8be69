"""Every ```python block of README.md runs, against the shipped models.

The convention for README.md's Python blocks (also in DEVELOPERS.md,
"README snippets"):

- Each fenced ```python block runs in a fresh interpreter (the venv's python,
  the repository on PYTHONPATH) from an empty temporary folder in which
  `savedmodels` links to the repository's `savedmodels/`: write model paths
  as from the repository root ("savedmodels/ptb").
- A block whose first statement is not an import continues the block before
  it in the same section (heading): it runs in one interpreter after that
  block (and after what that block continues). A block that starts with an
  import stands alone, so readers can copy it as it is.
- An HTML comment on the line right before the fence overrides this:
  `<!-- readme-test: continues -->` makes the block continue the one before,
  `<!-- readme-test: standalone -->` makes it stand alone, and
  `<!-- readme-test: skip REASON -->` does not run it (REASON is required;
  e.g. a block that would train for minutes: better, keep it tiny).
- Shown results are checked: a top-level expression followed by a comment
  that starts with a Python literal, on its line or alone on the next one
  (`out["elmo"].shape  # (1, 4, 256)`, `out["sequence_len"]  # [9, 3]: ...`),
  must evaluate to it. A shape compares as a tuple, a tensor or array by its
  values (`.tolist()`). A comment that is not a literal, like
  `# (batch, time, 2P)`, is prose.

Errors name README.md lines: each block is compiled with README.md as its
file name and its own line numbers. This file is also the runner of the
child interpreter (`python tests/readme_test.py --run SPEC.json`).
"""

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Optional

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO_ROOT, "README.md")

_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->\s*$")
_MARKERS = ("continues", "standalone", "skip")


@dataclasses.dataclass
class Block:
  line: int  # 1-based line of the opening fence in the Markdown file.
  section: str
  code: str  # Dedented.
  marker: Optional[str] = None  # One of _MARKERS.
  reason: str = ""  # For skip.
  continues: bool = False  # Resolved: runs after the block before it.


def parse_blocks(markdown: str) -> list[Block]:
  """The ```python blocks of `markdown`, with their convention resolved."""
  lines = markdown.splitlines()
  blocks, section, i = [], "", 0
  while i < len(lines):
    line = lines[i]
    fence = _FENCE.match(line)
    if not fence:
      heading = _HEADING.match(line)
      if heading:
        section = heading.group(1)
      i += 1
      continue
    start, language = i, fence.group(2).lower()
    i += 1
    while i < len(lines) and not _FENCE.match(lines[i]):
      i += 1
    body = lines[start + 1:i]
    i += 1  # The closing fence.
    if language != "python":
      continue
    block = Block(line=start + 1, section=section,
                  code=textwrap.dedent("\n".join(body)) + "\n")
    marker = _MARKER.match(lines[start - 1]) if start else None
    if marker:
      block.marker, block.reason = marker.group(1), marker.group(2)
      if block.marker not in _MARKERS:
        raise ValueError(f"README.md:{start}: unknown readme-test marker "
                         f"{block.marker!r}; use one of {_MARKERS}")
      if block.marker == "skip" and not block.reason:
        raise ValueError(f"README.md:{start}: `readme-test: skip` needs a "
                         "reason")
    if block.marker in ("continues", "standalone"):
      block.continues = block.marker == "continues"
    else:
      block.continues = not _starts_with_import(block.code)
    blocks.append(block)
  return blocks


def _starts_with_import(code: str) -> bool:
  try:
    body = ast.parse(code).body
  except SyntaxError:
    return False  # A fragment; if it continues nothing, running it says so.
  return bool(body) and isinstance(body[0], (ast.Import, ast.ImportFrom))


def chain(blocks: list[Block], index: int) -> list[Block]:
  """The blocks that run together for blocks[index], in order."""
  run = [blocks[index]]
  while run[0].continues:
    i = blocks.index(run[0])
    if i == 0 or blocks[i - 1].section != run[0].section:
      raise ValueError(
          f"README.md:{run[0].line}: this block continues another (it does "
          "not start with an import, or is marked `readme-test: continues`) "
          f"but is the first Python block of its section {run[0].section!r}")
    run.insert(0, blocks[i - 1])
  skipped = [b for b in run if b.marker == "skip"]
  if skipped and skipped[0] is not blocks[index]:
    raise ValueError(f"README.md:{blocks[index].line}: continues the skipped "
                     f"block at line {skipped[0].line}")
  return run


# --- The child interpreter: runs one chain of blocks. -----------------------


def expected_literal(comment: str) -> Optional[str]:
  """The Python literal a `# ...` comment starts with (its text), or None."""
  text = comment.lstrip().lstrip("#").strip()
  if not text or text[0] not in "([":
    return None
  depth = 0
  for end, char in enumerate(text):
    depth += char in "([{"
    depth -= char in ")]}"
    if depth == 0:
      try:
        ast.literal_eval(text[:end + 1])
      except (ValueError, SyntaxError):
        return None
      return text[:end + 1]
  return None


def _comment_after(lines: list[str], node: ast.stmt) -> str:
  """The comment after a statement: on its last line, or alone next line."""
  last = lines[node.end_lineno - 1].encode()  # ast offsets count bytes.
  rest = last[node.end_col_offset:].decode().strip()
  if rest.startswith("#"):
    return rest
  if not rest and node.end_lineno < len(lines):
    following = lines[node.end_lineno].strip()
    if following.startswith("#"):
      return following
  return ""


def checked_tree(code: str) -> ast.Module:
  """`code` with each `expr  # LITERAL` turned into a check of expr."""
  tree = ast.parse(code)
  lines = code.splitlines()
  for i, node in enumerate(tree.body):
    if not isinstance(node, ast.Expr):
      continue
    literal = expected_literal(_comment_after(lines, node))
    if literal is None:
      continue
    expected = ast.parse(literal, mode="eval").body
    for child in ast.walk(expected):
      ast.copy_location(child, node)
    call = ast.Call(
        func=ast.Name("__readme_check__", ast.Load()),
        args=[node.value, expected, ast.Constant(node.lineno),
              ast.Constant(ast.get_source_segment(code, node.value))],
        keywords=[])
    tree.body[i] = ast.copy_location(ast.Expr(ast.copy_location(call, node)),
                                     node)
  return ast.fix_missing_locations(tree)


def _as_comparable(value: Any, expected: Any) -> Any:
  if hasattr(value, "numpy"):  # A tensor.
    value = value.numpy()
  if hasattr(value, "tolist"):  # An array.
    value = value.tolist()
  if isinstance(expected, tuple) and not isinstance(value, (str, bytes)):
    try:
      return tuple(value)  # A TensorShape or a list.
    except TypeError:
      pass
  return value


def run_blocks(spec_path: str) -> None:
  with open(spec_path) as f:
    spec = json.load(f)
  namespace = {"__name__": "__main__"}
  for block in spec["blocks"]:
    offset = block["line"]  # The code starts on the line after the fence.

    def check(value, expected, line, source, offset=offset):
      actual = _as_comparable(value, expected)
      if actual != expected:
        raise AssertionError(
            f"README.md:{offset + line}: `{source}` is {actual!r}; the "
            f"comment says {expected!r}")

    namespace["__readme_check__"] = check
    tree = checked_tree(block["code"])
    ast.increment_lineno(tree, offset)
    exec(compile(tree, spec["readme"], "exec"), namespace)  # pylint: disable=exec-used


# --- The tests. --------------------------------------------------------------

# Parsed at collection: under Bazel README.md is data of this test.
if os.path.exists(README):
  with open(README, encoding="utf-8") as _f:
    BLOCKS = parse_blocks(_f.read())
else:
  BLOCKS = []


def test_readme_has_python_blocks():
  assert BLOCKS, f"no ```python block in {README}"


@pytest.mark.parametrize("block", [
    pytest.param(b, id=f"README.md:{b.line}", marks=(
        [pytest.mark.skip(reason=f"readme-test: skip {b.reason}")]
        if b.marker == "skip" else [])) for b in BLOCKS])
def test_readme_python_block(block, tmp_path):
  blocks = chain(BLOCKS, BLOCKS.index(block))
  spec = tmp_path / "spec.json"
  spec.write_text(json.dumps({
      "readme": README,
      "blocks": [{"line": b.line, "code": b.code} for b in blocks]}))
  work = tmp_path / "work"
  work.mkdir()
  (work / "savedmodels").symlink_to(os.path.join(REPO_ROOT, "savedmodels"))
  env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
  env.update(PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="",
             TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--run", str(spec)],
      cwd=work, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  lines = ", ".join(str(b.line) for b in blocks)
  assert result.returncode == 0, (
      f"README.md block(s) at line(s) {lines} failed:\n{result.stderr[-4000:]}")


# --- The convention itself, on a small Markdown text. ------------------------

_SAMPLE = '''# Title

## One

```python
import os
x = 1
```

```python
y = x + 1
y  # 2
```

<!-- readme-test: skip trains for an hour -->
```python
import time
```

## Two

  ```python
  z = 3
  ```

<!-- readme-test: continues -->
```python
import os
```

```sh
echo no
```
'''


def test_convention_parses_sample():
  blocks = parse_blocks(_SAMPLE)
  assert [(b.line, b.section, b.continues, b.marker) for b in blocks] == [
      (5, "One", False, None), (10, "One", True, None),
      (16, "One", False, "skip"), (22, "Two", True, None),
      (27, "Two", True, "continues")]
  assert blocks[2].reason == "trains for an hour"
  assert blocks[3].code == "z = 3\n"
  assert chain(blocks, 1) == blocks[:2]
  assert chain(blocks, 0) == blocks[:1]
  for index in (3, 4):  # Continue across a heading: an error.
    try:
      chain(blocks, index)
    except ValueError as e:
      assert "first Python block of its section" in str(e)
    else:
      raise AssertionError("expected ValueError")


def test_convention_checks_commented_results():
  assert expected_literal("# (1, 4, 256)") == "(1, 4, 256)"
  assert expected_literal("# [9, 3]: 人 民 日") == "[9, 3]"
  assert expected_literal("# (1, 10, 256): one vector per character") == (
      "(1, 10, 256)")
  assert expected_literal("# (batch, time, 2P)") is None
  assert expected_literal("# registers the ops") is None
  code = ("a = [1, 2]\n"
          "a  # [1, 2]\n"
          "len('人民')  # (2)\n"
          "tuple(a)\n"
          "      # (1, 2): on the next line\n"
          "a  # (batch,)\n")
  checks = []
  namespace = {"__readme_check__": lambda *args: checks.append(args[:2])}
  exec(compile(checked_tree(code), "<sample>", "exec"), namespace)  # pylint: disable=exec-used
  assert checks == [([1, 2], [1, 2]), (2, 2), ((1, 2), (1, 2))]


if __name__ == "__main__" and sys.argv[1:2] == ["--run"]:
  run_blocks(sys.argv[2])
