"""elmo-tf: one command for the programs in bin/.

  elmo-tf --help                      # lists the subcommands
  elmo-tf train --corpus=ptb --preset=tiny --max_steps=100 --model_dir=runs/t
  elmo-tf export --help               # the program's own absl --help

`elmo-tf NAME ARGS...` runs bin/NAME.py exactly as `python -m bin.NAME ARGS...`
and `bazel run //bin:NAME -- ARGS...` do: the module is executed as
`__main__` (runpy), so its `app.run(main)` parses ARGS. Only the chosen
program's module is imported, since every program defines its absl flags at
import time. This file defines no flags.

`pip install .` (or the editable install of `make setup`) makes this module
the console script `elmo-tf`. The wheel ships bin/ as the package
`elmo_tf_bin` (see [tool.setuptools] in pyproject.toml and DEVELOPERS.md,
"Wheel and the elmo-tf command"); the programs import `from bin import ...`,
so the dispatcher makes `bin` an alias of that package in its own process.
In the source tree it also runs as `python -m bin.cli` or
`bazel run //bin:cli -- NAME ARGS...`.
"""

import ast
import importlib
import importlib.util
import runpy
import sys
from typing import Optional, Sequence

# Subcommand -> module of this package (bin/<module>.py). A new program is one
# line here (keep the table sorted); its py_library in bin/BUILD then goes
# into the deps of :cli_lib. tests/packaging_test.py checks that every program
# in bin/ is listed.
COMMANDS = {
    "embed": "embed",
    "evaluate": "evaluate",
    "export": "export",
    "export-hdf5": "export_hdf5",
    "import-hdf5": "import_hdf5",
    "polysemy": "polysemy",
    "prepare-corpus": "prepare_corpus",
    "score": "score",
    "train": "train",
}

_PROG = "elmo-tf"


def programs_package() -> str:
  """Makes `bin` importable as the package that holds this file; returns it.

  In the source tree (`python -m bin.cli`, Bazel) that package is `bin`
  itself. Installed from the wheel it is `elmo_tf_bin`, and the programs'
  `from bin import flag_utils` needs `bin` to be that package: the alias
  lives only in this process.
  """
  package = __spec__.parent if __spec__ is not None and __spec__.parent else ""
  if package and package != "bin":
    sys.modules["bin"] = importlib.import_module(package)
  else:
    importlib.import_module("bin")
  return "bin"


def summary(module: str) -> str:
  """First line of bin/<module>.py's docstring, read without importing it."""
  spec = importlib.util.find_spec(f"{programs_package()}.{module}")
  if spec is None or not spec.origin:
    return ""
  with open(spec.origin, encoding="utf-8") as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  return doc.strip().splitlines()[0] if doc.strip() else ""


def usage() -> str:
  width = max(len(name) for name in COMMANDS)
  lines = [f"usage: {_PROG} COMMAND [--flags...]", "",
           "Runs one of elmo_tf's programs (bin/COMMAND.py with '-' as '_').",
           "", "commands:"]
  lines += [f"  {name:<{width}}  {summary(module)}"
            for name, module in sorted(COMMANDS.items())]
  lines += ["", f"'{_PROG} COMMAND --help' lists a command's flags."]
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2:
    print(usage(), file=sys.stderr)
    return 2
  if argv[1] in ("-h", "--help", "help"):
    print(usage())
    return 0
  name = argv[1].replace("_", "-")
  if name not in COMMANDS:
    print(f"{_PROG}: unknown command {argv[1]!r}\n\n{usage()}",
          file=sys.stderr)
    return 2
  module = f"{programs_package()}.{COMMANDS[name]}"
  # runpy puts the module's file in sys.argv[0] while it runs, as `python -m`.
  sys.argv = [f"{_PROG} {name}", *argv[2:]]
  runpy.run_module(module, run_name="__main__", alter_sys=True)
  return 0  # A program that returns without app.run's sys.exit.


if __name__ == "__main__":
  sys.exit(main())
