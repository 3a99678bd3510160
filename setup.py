"""The package's C extension (the access log's capture, decision 0017); everything else is in
pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edgecache.edge._logcapture",
            ["src/edgecache/edge/_logcapture.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    ]
)
