"""py_pytest: a py_test whose test file is run by pytest (not as a script).

A pytest-style file (bare `def test_x(tmp_path): ...`, fixtures, conftest.py)
does nothing when executed by a plain py_test, which then passes vacuously.
This macro runs the file through pytest instead, so Bazel and `pytest tests`
execute the same tests the same way.
"""

def py_pytest(name, srcs, deps = [], data = [], args = [], **kwargs):
    native.py_test(
        name = name,
        # conftest.py of the calling package, if any, is picked up too.
        srcs = srcs + native.glob(["conftest.py"]) + ["//tools:pytest_main.py"],
        main = "//tools:pytest_main.py",
        deps = deps,
        # The venv's packages are invisible to Bazel; depending on the pins
        # makes a requirements change re-run the tests instead of using cached
        # results.
        data = data + ["//:requirements.txt"],
        args = ["$(rootpath %s)" % s for s in srcs] + args,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
