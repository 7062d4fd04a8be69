"""The machine a benchmark ran on, recorded beside every figure."""

import platform
import subprocess

# The instruction sets that decide what float32 and bfloat16 matmuls reach
# here: the machines of BENCHMARKS.md share a model name ("AMD EPYC") across
# CPU generations and differ in exactly these. (/proc/cpuinfo flag, label.)
_MATMUL_FLAGS = (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512_BF16"),
                 ("amx_tile", "AMX"))


def _cpuinfo_fields(cpuinfo_path: str) -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo ({} if unreadable)."""
  fields = {}
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
      for line in f:
        if not line.strip():
          break  # The end of the first processor's block.
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return fields


def _model_name(fields: dict[str, str]) -> str:
  """The CPU's model name (/proc/cpuinfo, else `lscpu`, else platform)."""
  if fields.get("model name"):
    return fields["model name"]
  try:
    output = subprocess.run(["lscpu"], capture_output=True, text=True,
                            check=False).stdout
  except OSError:
    output = ""
  for line in output.splitlines():
    if line.startswith("Model name:"):
      return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine() or "unknown"


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
  """The CPU's model name, family and model numbers and matmul ISAs.

  E.g. "AMD EPYC (family 25, model 17; AVX-512, AVX512_BF16, no AMX)": the
  name alone does not tell a Zen 4 from a Zen 5, nor whether bfloat16
  matmuls run natively, which decides what `mixed_bfloat16` can gain.
  Only the name where /proc/cpuinfo cannot be read (not Linux).
  """
  fields = _cpuinfo_fields(cpuinfo_path)
  name = _model_name(fields)
  details = []
  if fields.get("cpu family") and fields.get("model"):
    details.append(f"family {fields['cpu family']}, model {fields['model']}")
  if "flags" in fields:
    flags = set(fields["flags"].split())
    present = [label for flag, label in _MATMUL_FLAGS if flag in flags]
    for label in ("AVX-512", "AMX"):
      if label not in present:
        present.append(f"no {label}")
    details.append(", ".join(present))
  return f"{name} ({'; '.join(details)})" if details else name
