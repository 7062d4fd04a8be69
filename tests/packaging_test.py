"""Packaging: the editable install of `make setup`, the wheel, `elmo-tf`.

- EditableInstallTest: tools/setup.sh installs elmo_tf into .venv in editable
  mode, so a script anywhere, run with the venv's python, imports elmo_tf
  from this working tree. Skipped (with the reason) when the interpreter
  running the tests cannot import elmo_tf from a folder outside the
  repository, i.e. `make setup` has not run for this checkout. Under Bazel
  the interpreter is .venv's python3 too, so it runs there as well.
- CliTest: bin/cli.py, in the source tree: every program of bin/ is in its
  table, `python -m bin.cli` and the script form (as `bazel run //bin:cli`)
  dispatch.
- WheelTest: `pip wheel` builds the wheel from the working tree; its files
  and METADATA are checked, then it is installed into a throwaway venv whose
  dependencies are .venv's (a .pth file), and `elmo-tf` runs from a folder
  outside the repository: `--help`, `export --help` and a 2-step tiny
  `train` that exports.

The wheel is built from the real working tree (under Bazel: the directory
the runfiles point into), through a temporary folder of symlinks, because
setuptools writes build/ and *.egg-info beside pyproject.toml.
"""

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import unittest
import zipfile
from importlib import metadata
from typing import Optional

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from bin import cli
from tests import toy_corpus

# The repository as this process sees it (the runfiles tree under Bazel) and
# the working tree itself (the runfiles are symlinks into it).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

# Never linked into the build folder: VCS, venv, outputs, build leftovers.
_NOT_SOURCES = re.compile(
    r"^(\.git|\.venv|runs|build|dist|bazel-.*|.*\.egg-info|__pycache__|"
    r"\.pytest_cache)$")
_TIMEOUT = 600
# absl's --help prints the help, then exits 1 (as `python -m bin.export`).
_HELP_CODES = (0, 1)


def _env(**extra: str) -> dict[str, str]:
  """The environment for a fresh interpreter that must not see the repo."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "PYTHONHOME", "BUILD_WORKING_DIRECTORY")}
  env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", **extra)
  return env


def _run(args: list[str], cwd: str, env: Optional[dict[str, str]] = None,
         timeout: int = _TIMEOUT) -> subprocess.CompletedProcess:
  return subprocess.run(
      [str(a) for a in args], cwd=cwd, env=_env() if env is None else env,
      capture_output=True, text=True, timeout=timeout, check=False)


def _source_files(directory: str) -> set[str]:
  """The .py (and .cc: kernels compiled at run time) files under
  SOURCE_ROOT/directory, relative to it."""
  root = os.path.join(SOURCE_ROOT, directory)
  found = set()
  for parent, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    found.update(os.path.relpath(os.path.join(parent, f), root)
                 for f in files if f.endswith((".py", ".cc")))
  return found


def _pins() -> dict[str, str]:
  """requirements.txt as {canonical name: pinned version}."""
  pins = {}
  with open(os.path.join(SOURCE_ROOT, "requirements.txt")) as f:
    for line in f:
      line = line.split("#")[0].strip()
      if line:
        req = Requirement(line)
        pins[canonicalize_name(req.name)] = str(req.specifier)
  return pins


def _pyproject() -> dict:
  with open(os.path.join(SOURCE_ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def _editable_elmo_tf() -> Optional[str]:
  """elmo_tf's __init__.py as seen from a folder outside the repo, or None."""
  with tempfile.TemporaryDirectory() as tmp:
    result = _run([sys.executable, "-c",
                   "import elmo_tf; print(elmo_tf.__file__)"], cwd=tmp,
                  timeout=120)
  return result.stdout.strip() if result.returncode == 0 else None


class EditableInstallTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.elmo_tf_file = _editable_elmo_tf()
    if cls.elmo_tf_file is None:
      raise unittest.SkipTest(
          f"elmo_tf is not importable by {sys.executable} from a folder "
          "outside the repository: `make setup` (tools/setup.sh) installs it "
          "into .venv in editable mode")

  def test_it_is_this_working_tree_not_a_copy(self):
    self.assertEqual(
        os.path.realpath(self.elmo_tf_file),
        os.path.join(SOURCE_ROOT, "elmo_tf", "__init__.py"),
        "the venv's elmo_tf is not this working tree: run `make setup` here")

  def test_a_script_anywhere_embeds_with_a_shipped_model(self):
    model = os.path.join(REPO_ROOT, "savedmodels", "ptb")
    with tempfile.TemporaryDirectory() as tmp:
      with open(os.path.join(tmp, "my_model.py"), "w") as f:
        f.write(
            "import json, sys\n"
            "import numpy as np\n"
            "import tensorflow as tf\n"
            "import elmo_tf\n"
            "layer = elmo_tf.ElmoEmbedding(sys.argv[1], output='default')\n"
            "vectors = layer(tf.constant(['the market fell sharply']))\n"
            "print(json.dumps({'shape': list(vectors.shape),\n"
            "                  'finite': bool(np.isfinite(vectors).all())}))\n")
      result = _run([sys.executable, "my_model.py", model], cwd=tmp)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual(out, {"shape": [1, 256], "finite": True})  # 2 x 128

  def test_the_elmo_tf_command_is_in_the_venv(self):
    command = os.path.join(os.path.dirname(sys.executable), "elmo-tf")
    self.assertTrue(os.path.exists(command), command)
    with tempfile.TemporaryDirectory() as tmp:
      result = _run([command, "--help"], cwd=tmp, timeout=120)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("prepare-corpus", result.stdout)


class CliTest(unittest.TestCase):

  def test_every_program_in_bin_is_a_command(self):
    programs = set()
    for name in os.listdir(os.path.join(SOURCE_ROOT, "bin")):
      if name.endswith(".py") and name != "cli.py":
        with open(os.path.join(SOURCE_ROOT, "bin", name)) as f:
          if re.search(r"^\s*app\.run\(", f.read(), re.MULTILINE):
            programs.add(name[:-3])
    missing = sorted(programs - set(cli.COMMANDS.values()))
    self.assertFalse(missing, "programs of bin/ missing from COMMANDS in "
                     "bin/cli.py: add a line per program, e.g. "
                     + ", ".join(f'"{m.replace("_", "-")}": "{m}",'
                                 for m in missing))
    for name, module in cli.COMMANDS.items():
      self.assertEqual(name, module.replace("_", "-"))
      self.assertIn(module, programs, f"COMMANDS lists {module}: no bin/"
                    f"{module}.py with app.run(main)")

  def test_python_m_and_script_forms(self):
    env = _env(PYTHONPATH=REPO_ROOT)
    listing = _run([sys.executable, "-m", "bin.cli", "--help"], cwd=REPO_ROOT,
                   env=env, timeout=120)
    self.assertEqual(listing.returncode, 0, listing.stderr[-3000:])
    for name in cli.COMMANDS:
      self.assertIn(f"\n  {name} ", listing.stdout)
    # As `bazel run //bin:cli` runs it: a script, the workspace on the path.
    with tempfile.TemporaryDirectory() as tmp:
      export = _run([sys.executable, os.path.join(REPO_ROOT, "bin", "cli.py"),
                     "export", "--help"], cwd=tmp, env=env, timeout=120)
      unknown = _run([sys.executable, "-m", "bin.cli", "no-such-command"],
                     cwd=tmp, env=env, timeout=120)
    self.assertIn(export.returncode, _HELP_CODES, export.stderr[-3000:])
    self.assertIn("--export_tokenization", export.stdout + export.stderr)
    self.assertEqual(unknown.returncode, 2)
    self.assertIn("unknown command 'no-such-command'", unknown.stderr)


class WheelTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix="packaging_test_")
    src = os.path.join(cls.tmp, "src")
    os.mkdir(src)
    for name in os.listdir(SOURCE_ROOT):
      if not _NOT_SOURCES.match(name):
        os.symlink(os.path.join(SOURCE_ROOT, name), os.path.join(src, name))
    dist = os.path.join(cls.tmp, "dist")
    result = _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps",
                   "--no-build-isolation", "--no-index", "-q", "-w", dist],
                  cwd=cls.tmp)
    if result.returncode:
      shutil.rmtree(cls.tmp, ignore_errors=True)
      raise AssertionError(f"pip wheel failed:\n{result.stderr[-5000:]}")
    (wheel,) = os.listdir(dist)
    cls.wheel = os.path.join(dist, wheel)
    with zipfile.ZipFile(cls.wheel) as z:
      cls.names = set(z.namelist())
      cls.dist_info = next(n.split("/")[0] for n in cls.names
                           if n.endswith(".dist-info/METADATA"))
      cls.metadata = email.parser.Parser().parsestr(
          z.read(f"{cls.dist_info}/METADATA").decode())
      cls.entry_points = z.read(f"{cls.dist_info}/entry_points.txt").decode()
      cls.license = {n: z.read(n) for n in cls.names
                     if n.startswith(cls.dist_info) and
                     os.path.basename(n) == "LICENSE"}

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_the_venv_has_the_build_requirements(self):
    for line in _pyproject()["build-system"]["requires"]:
      req = Requirement(line)
      self.assertIn(metadata.version(req.name), req.specifier,
                    f"{req} (pyproject.toml [build-system]): run `make setup`")

  def test_files_are_the_library_and_the_programs_only(self):
    shipped = {n for n in self.names if not n.startswith(self.dist_info)}
    expected = ({f"elmo_tf/{f}" for f in _source_files("elmo_tf")} |
                {f"elmo_tf_bin/{f}" for f in _source_files("bin")})
    self.assertEqual(
        shipped, expected, "a new subpackage of elmo_tf goes into "
        "[tool.setuptools] packages in pyproject.toml")
    for name in self.names:  # Belt and braces: no models, BUILD or tests.
      self.assertNotRegex(
          name, r"^(savedmodels|tests|bench|tools|bin)/|saved_model\.pb|"
          r"(^|/)BUILD$")

  def test_metadata(self):
    import elmo_tf  # pylint: disable=g-import-not-at-top
    meta = self.metadata
    self.assertEqual(canonicalize_name(meta["Name"]), "elmo-tf")
    self.assertEqual(meta["Version"], elmo_tf.__version__)
    self.assertEqual(SpecifierSet(meta["Requires-Python"]),
                     SpecifierSet(_pyproject()["project"]["requires-python"]))
    self.assertEqual(meta["License-Expression"], "Apache-2.0")
    with open(os.path.join(SOURCE_ROOT, "LICENSE"), "rb") as f:
      self.assertEqual(list(self.license.values()), [f.read()])
    self.assertEqual(meta["Description-Content-Type"], "text/markdown")
    with open(os.path.join(SOURCE_ROOT, "README.md"), encoding="utf-8") as f:
      self.assertEqual(meta.get_payload().strip(), f.read().strip())

    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    plain = {canonicalize_name(r.name) for r in requires if not r.marker}
    want = {canonicalize_name(Requirement(r).name)
            for r in _pyproject()["project"]["dependencies"]}
    self.assertEqual(plain, want)
    for needed in ("tensorflow", "tensorflow-text", "keras", "absl-py",
                   "numpy"):
      self.assertIn(needed, plain)
    # A pinned dependency (extras too) has requirements.txt's pin.
    pins = _pins()
    for req in requires:
      if str(req.specifier).startswith("=="):
        name = canonicalize_name(req.name)
        self.assertEqual(str(req.specifier), pins.get(name),
                         f"{req}: pyproject.toml and requirements.txt differ")

  def test_entry_point(self):
    self.assertRegex(self.entry_points,
                     r"\[console_scripts\]\s*\nelmo-tf = elmo_tf_bin\.cli:main")

  def test_installed_wheel_runs_commands_outside_the_repo(self):
    env_dir = os.path.join(self.tmp, "env")
    python = os.path.join(env_dir, "bin", "python")
    result = _run([sys.executable, "-m", "venv", "--without-pip", env_dir],
                  cwd=self.tmp)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    # pip of .venv, run by the new venv's python: a clean install there.
    result = _run([sys.executable, "-m", "pip", "--python", python, "install",
                   "-q", "--no-deps", "--no-index", self.wheel], cwd=self.tmp)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    # Dependencies: .venv's packages, after the venv's own (not processed as
    # a site directory, so .venv's editable elmo_tf finder stays off).
    purelib = _run([python, "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=self.tmp).stdout.strip()
    with open(os.path.join(purelib, "venv_dependencies.pth"), "w") as f:
      f.write(sysconfig.get_paths()["purelib"] + "\n")

    work = os.path.join(self.tmp, "work")  # Outside the repository.
    os.mkdir(work)
    where = _run([python, "-c",
                  "import importlib.util, json, elmo_tf, elmo_tf_bin; "
                  "print(json.dumps([elmo_tf.__file__, elmo_tf_bin.__file__, "
                  "importlib.util.find_spec('bin') is None]))"], cwd=work)
    self.assertEqual(where.returncode, 0, where.stderr[-3000:])
    elmo_tf_file, elmo_tf_bin_file, no_bin = json.loads(where.stdout)
    self.assertTrue(elmo_tf_file.startswith(purelib), elmo_tf_file)
    self.assertTrue(elmo_tf_bin_file.startswith(purelib), elmo_tf_bin_file)
    self.assertTrue(no_bin, "a package `bin` is importable in the new venv")

    command = os.path.join(env_dir, "bin", "elmo-tf")
    listing = _run([command, "--help"], cwd=work)
    self.assertEqual(listing.returncode, 0, listing.stderr[-3000:])
    self.assertIn("Pretrains an ELMo biLM.", listing.stdout)
    for name in cli.COMMANDS:
      self.assertIn(f"\n  {name} ", listing.stdout)
    export_help = _run([command, "export", "--help"], cwd=work)
    self.assertIn(export_help.returncode, _HELP_CODES,
                  export_help.stderr[-3000:])
    text = export_help.stdout + export_help.stderr
    self.assertIn("Exports a trained biLM as a SavedModel", text)
    self.assertIn("--export_tokenization", text)

    corpus = toy_corpus.write_corpus(os.path.join(work, "toy"), n_train=200,
                                     n_heldout=20)
    train = _run([command, "train", f"--corpus={corpus['spec']}",
                  "--model_dir=run", "--preset=tiny", "--max_steps=2",
                  "--batch_size=16", "--eval_every_steps=0",
                  "--set=train.eval_max_batches=1",
                  f"--cache_dir={os.path.join(work, 'cache')}"], cwd=work)
    self.assertEqual(train.returncode, 0, train.stderr[-5000:])
    run = os.path.join(work, "run")
    for name in ("config.json", "vocab.txt", "checkpoint",
                 "saved_model/saved_model.pb", "saved_model/assets/vocab.txt"):
      self.assertTrue(os.path.exists(os.path.join(run, name)), name)


if __name__ == "__main__":
  unittest.main()
