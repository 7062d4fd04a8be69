"""The package's rooms stay apart: inference never pulls in training code.

`elmo_tf.elmo_embedding` (what downstream Keras models depend on) and
`elmo_tf.export` read trained runs through `elmo_tf.checkpoints` and run the
inference head of `elmo_tf.models.elmo`; neither imports the trainer, the
data pipeline, corpus preparation or the corpora, at import time or late.
Checked twice: in a fresh interpreter (sys.modules) and in the Bazel
dependency graph declared by the BUILD files (what `bazel query
'deps(//elmo_tf:elmo_embedding)'` computes, evaluated here from the BUILD
files so the test runs under pytest and Bazel alike).
"""

import os
import subprocess
import sys
import unittest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING_MODULES = ("elmo_tf.trainer", "elmo_tf.data", "elmo_tf.prepare",
                    "elmo_tf.corpora", "elmo_tf.evaluation",
                    "elmo_tf.distribution", "elmo_tf.optimizers")
TRAINING_TARGETS = ("//elmo_tf:trainer", "//elmo_tf:data", "//elmo_tf:prepare",
                    "//elmo_tf:corpora", "//elmo_tf:evaluation",
                    "//elmo_tf:distribution", "//elmo_tf:optimizers")
BUILD_PACKAGES = ("elmo_tf", "elmo_tf/models", "elmo_tf/layers")


def _build_graph() -> dict[str, list[str]]:
  """{label: deps} of the py_library targets of the library's BUILD files."""
  graph = {}
  for package in BUILD_PACKAGES:

    def py_library(name, deps=(), package=package, **unused_kwargs):
      labels = []
      for dep in deps:
        if dep.startswith(":"):
          dep = f"//{package}{dep}"
        elif ":" not in dep:  # "//elmo_tf/models" means its :models.
          dep = f"{dep}:{dep.rsplit('/', 1)[-1]}"
        labels.append(dep)
      graph[f"//{package}:{name}"] = labels

    path = os.path.join(REPO_ROOT, package, "BUILD")
    with open(path, encoding="utf-8") as f:
      source = f.read()
    # BUILD files are Starlark; these use only package(), exports_files()
    # and py_library().
    namespace = {"py_library": py_library, "package": lambda **_: None,
                 "exports_files": lambda *_, **__: None}
    exec(compile(source, path, "exec"), namespace)  # pylint: disable=exec-used
  return graph


def _closure(graph: dict[str, list[str]], label: str) -> set[str]:
  seen, stack = set(), [label]
  while stack:
    current = stack.pop()
    if current in seen:
      continue
    seen.add(current)
    stack.extend(graph.get(current, []))
  return seen


class ArchitectureTest(unittest.TestCase):

  def test_inference_modules_import_no_training_code(self):
    code = (
        "import sys\n"
        "import elmo_tf.elmo_embedding, elmo_tf.export\n"
        "from elmo_tf.models import elmo\n"
        f"loaded = [m for m in {TRAINING_MODULES!r} if m in sys.modules]\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="",
                 PYTHONPATH=REPO_ROOT), capture_output=True, text=True,
        timeout=240, check=False)
    self.assertEqual(result.returncode, 0,
                     f"training modules imported: {result.stdout}"
                     f"{result.stderr[-2000:]}")

  def test_build_deps_of_the_inference_targets_hold_no_training_target(self):
    graph = _build_graph()
    self.assertIn("//elmo_tf:trainer", graph)  # The parse found the targets.
    for target in ("//elmo_tf:elmo_embedding", "//elmo_tf:export",
                   "//elmo_tf/models:elmo"):
      deps = _closure(graph, target)
      self.assertIn("//elmo_tf:checkpoints" if target != "//elmo_tf/models:elmo"
                    else "//elmo_tf:sentences", deps)
      self.assertFalse(deps & set(TRAINING_TARGETS),
                       f"{target} depends on {sorted(deps & set(TRAINING_TARGETS))}")

  def test_training_and_inference_share_the_sentence_packer(self):
    graph = _build_graph()
    self.assertIn("//elmo_tf:sentences", _closure(graph, "//elmo_tf:data"))
    self.assertIn("//elmo_tf:sentences",
                  _closure(graph, "//elmo_tf/models:elmo"))


if __name__ == "__main__":
  unittest.main()
