"""Prints one closing line for `bazel test //...`: test cases passed/failed.

Bazel reports targets (test files); each `py_pytest` target runs pytest with
--junitxml, so the per-case counts are read from bazel-testlogs/**/test.xml.
"""

import glob
import sys
import xml.etree.ElementTree as ElementTree


def main() -> int:
  passed = failed = skipped = 0
  files = glob.glob("bazel-testlogs/**/test.xml", recursive=True)
  for path in files:
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for suite in suites:
      tests = int(suite.get("tests", 0))
      bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
      skip = int(suite.get("skipped", 0))
      failed += bad
      skipped += skip
      passed += tests - bad - skip
  print(f"bazel: {passed} passed, {failed} failed, {skipped} skipped "
        f"({len(files)} test files)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
