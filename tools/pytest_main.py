"""Entry point for `py_pytest` (tools/pytest.bzl): runs pytest on the files
given as arguments, inside Bazel's runfiles tree (cwd = workspace root)."""
import os
import sys

import pytest

# `make setup` installs elmo_tf into the venv in editable mode; its import
# finder would serve any elmo_tf module from the working tree. Under Bazel a
# test must see only the modules its BUILD deps put into runfiles, so a
# missing dep fails here as it would for a user of the target.
sys.meta_path[:] = [finder for finder in sys.meta_path
                    if not getattr(finder, "__module__", "").startswith(
                        "__editable__")]

if __name__ == "__main__":
    args = ["-q", "-p", "no:cacheprovider", "--rootdir=."]
    xml = os.environ.get("XML_OUTPUT_FILE")  # set by `bazel test`
    if xml:
        args.append("--junitxml=" + xml)
    sys.exit(pytest.main(args + sys.argv[1:]))
