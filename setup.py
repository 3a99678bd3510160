"""The package's C extensions (the access log's capture, decision 0017; the fill ring's appender,
decision 0020's addendum; an origin response's head, decision 0024; a client's request head,
decision 0031; the workers' fill claims, decision 0028; the memory tier's untrack and index
bookkeeping, decision 0002's addenda 8 and 9); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edgecache.edge._logcapture",
            ["src/edgecache/edge/_logcapture.c"],
            depends=["src/edgecache/_crc32c.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "edgecache.edge._originhead",
            ["src/edgecache/edge/_originhead.c"],
            depends=["src/edgecache/edge/_fieldline.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "edgecache.edge._answerhead",
            ["src/edgecache/edge/_answerhead.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "edgecache.edge._reqhead",
            ["src/edgecache/edge/_reqhead.c"],
            depends=["src/edgecache/edge/_fieldline.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "edgecache.store._fillring",
            ["src/edgecache/store/_fillring.c"],
            depends=["src/edgecache/_crc32c.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "edgecache.store._untrack",
            ["src/edgecache/store/_untrack.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "edgecache.store._links",
            ["src/edgecache/store/_links.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "edgecache.cluster._claims",
            ["src/edgecache/cluster/_claims.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
    ]
)
