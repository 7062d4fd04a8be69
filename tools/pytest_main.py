"""Entry point for `py_pytest` (tools/pytest.bzl): runs pytest on the files
given as arguments, inside Bazel's runfiles tree (cwd = workspace root)."""
import os
import sys

import pytest

if __name__ == "__main__":
    args = ["-q", "-p", "no:cacheprovider", "--rootdir=."]
    xml = os.environ.get("XML_OUTPUT_FILE")  # set by `bazel test`
    if xml:
        args.append("--junitxml=" + xml)
    sys.exit(pytest.main(args + sys.argv[1:]))
