"""The machine a benchmark ran on, recorded beside every figure."""

import platform
import subprocess


def cpu_model() -> str:
  """The CPU's model name (`lscpu`, else /proc/cpuinfo, else platform)."""
  try:
    output = subprocess.run(["lscpu"], capture_output=True, text=True,
                            check=False).stdout
  except OSError:
    output = ""
  for line in output.splitlines():
    if line.startswith("Model name:"):
      return line.split(":", 1)[1].strip()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"
