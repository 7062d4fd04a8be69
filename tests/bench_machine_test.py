"""The CPU description every benchmark records (bench/machine.py): name,
family and model numbers, and the matmul instruction sets, from a
/proc/cpuinfo the test writes."""

import os
import tempfile
import unittest

from bench import machine

_ZEN4_FLAGS = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
_XEON_AMX_FLAGS = "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"


def _cpuinfo(folder: str, name: str, family: str, model: str, flags: str,
             processors: int = 2) -> str:
  block = (f"processor\t: {{i}}\nvendor_id\t: x\ncpu family\t: {family}\n"
           f"model\t\t: {model}\nmodel name\t: {name}\nflags\t\t: {flags}\n")
  path = os.path.join(folder, "cpuinfo")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(block.format(i=i) for i in range(processors)) + "\n")
  return path


class CpuModelTest(unittest.TestCase):

  def setUp(self):
    super().setUp()
    self.folder = tempfile.mkdtemp()

  def test_amd_zen4_without_amx(self):
    path = _cpuinfo(self.folder, "AMD EPYC", "25", "17", _ZEN4_FLAGS)
    self.assertEqual(machine.cpu_model(path),
                     "AMD EPYC (family 25, model 17; AVX-512, AVX512_BF16, "
                     "no AMX)")

  def test_xeon_with_amx(self):
    path = _cpuinfo(self.folder, "Intel(R) Xeon(R) Processor", "6", "143",
                    _XEON_AMX_FLAGS)
    self.assertEqual(machine.cpu_model(path),
                     "Intel(R) Xeon(R) Processor (family 6, model 143; "
                     "AVX-512, AVX512_BF16, AMX)")

  def test_without_avx512(self):
    path = _cpuinfo(self.folder, "AMD EPYC 7B12", "23", "49", "fpu avx2 fma")
    self.assertEqual(machine.cpu_model(path),
                     "AMD EPYC 7B12 (family 23, model 49; no AVX-512, no AMX)")

  def test_unreadable_cpuinfo_gives_a_name(self):
    name = machine.cpu_model(os.path.join(self.folder, "missing"))
    self.assertTrue(name)
    self.assertNotIn("family", name)


if __name__ == "__main__":
  unittest.main()
