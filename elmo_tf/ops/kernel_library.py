"""Build and load one of elmo_tf's custom op libraries (a C++ source file).

Each library is compiled on first use with the compiler and the flags of the
installed TensorFlow (`tf.sysconfig`), for this machine's CPU
(`-march=native`), into a cache keyed by the source, the TensorFlow version,
the compiler and the CPU (`$ELMO_TF_OPS_CACHE`, default ~/.cache/elmo_tf/ops);
`make setup` builds them once. When one cannot be built or loaded (no
compiler, another platform), `load()` logs why and returns None, and callers
use plain TensorFlow ops: the same numbers, slower. No custom op is ever part
of an exported SavedModel, so SavedModels load anywhere.
"""

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from typing import Optional

from absl import logging
import tensorflow as tf

_CXX = os.environ.get("CXX", "g++")
# -mno-avx512fp16: TensorFlow 2.21's Eigen headers do not compile under g++
# 12 with AVX512-FP16 on (Sapphire Rapids: PacketMathFP16.h, "expected
# initializer before '<'"); the kernels have no half-precision code to lose.
_FLAGS = ("-shared", "-fPIC", "-O3", "-DNDEBUG", "-march=native",
          "-mno-avx512fp16",
          "-Wno-deprecated-declarations")


def cache_dir() -> str:
  return os.environ.get(
      "ELMO_TF_OPS_CACHE",
      os.path.join(os.path.expanduser("~"), ".cache", "elmo_tf", "ops"))


def _cpu_signature() -> str:
  """The CPU model and its instruction set flags (-march=native's input)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      lines = [line for line in f
               if line.startswith(("model name", "flags", "cpu family"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor()


class KernelLibrary:
  """One op library: `source` (a .cc file next to this module), described
  as `description` in log lines ("the fused LSTMP kernel")."""

  def __init__(self, source: str, description: str):
    self.source = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               source)
    self.description = description
    self._lock = threading.Lock()
    self._module = None
    self._failure: Optional[str] = None

  def library_path(self) -> str:
    """Where the library for this source, TensorFlow, compiler and CPU
    lives."""
    compiler = shutil.which(_CXX) or _CXX
    key = hashlib.sha256()
    with open(self.source, "rb") as f:
      key.update(f.read())
    for part in (tf.__version__, compiler, " ".join(_FLAGS),
                 " ".join(tf.sysconfig.get_compile_flags()),
                 " ".join(tf.sysconfig.get_link_flags()), _cpu_signature()):
      key.update(part.encode())
    stem = os.path.splitext(os.path.basename(self.source))[0]
    return os.path.join(cache_dir(), f"{stem}-{key.hexdigest()[:16]}.so")

  def build(self, path: str) -> None:
    """Compiles the library to `path` (atomically: a temporary file
    renamed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    command = [_CXX, *_FLAGS, *tf.sysconfig.get_compile_flags(), self.source,
               "-o", tmp, *tf.sysconfig.get_link_flags()]
    logging.info("Compiling %s: %s", self.description, " ".join(command))
    try:
      result = subprocess.run(command, capture_output=True, text=True,
                              check=False)
      if result.returncode != 0:
        # The errors, not the tail: Eigen's warnings can fill the last 2 kB.
        errors = [line for line in result.stderr.splitlines()
                  if " error: " in line or line.startswith("error")]
        raise RuntimeError(f"{_CXX} failed ({result.returncode}): " + (
            "\n".join(errors[:10]) if errors else result.stderr[-2000:]))
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  def load(self):
    """The loaded op module, building it first if needed; None (with the
    reason logged once) when it cannot be built or loaded."""
    with self._lock:
      if self._module is not None or self._failure is not None:
        return self._module
      try:
        path = self.library_path()
        if not os.path.exists(path):
          os.makedirs(os.path.dirname(path), exist_ok=True)
          # One process builds; the others wait for it, then load.
          with open(path + ".lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            if not os.path.exists(path):
              self.build(path)
        self._module = tf.load_op_library(path)
      except (OSError, RuntimeError, tf.errors.OpError) as e:
        self._failure = str(e)
        logging.warning("%s is not available, using TensorFlow ops instead "
                        "(same numbers, slower): %s",
                        self.description[0].upper() + self.description[1:],
                        e)
      return self._module

  def failure(self) -> Optional[str]:
    """Why `load()` returned None (None if it did not, or was not called)."""
    return self._failure
