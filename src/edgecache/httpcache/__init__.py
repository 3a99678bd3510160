"""The HTTP caching core: pure functions implementing RFC 9111 and the parts of RFC 9110 a cache needs.

Rules of this package:
- Standard library only: no network, no I/O, no framework. Every function is deterministic given its
  arguments (time is always passed in, never read), so the data plane and the tests share one truth.
- Request headers are ``Mapping[str, str]`` with lower-case names, repeated fields joined with ", ".
  Response headers are ``Sequence[tuple[str, str]]`` with names in any case, possibly repeated.
- Each caching decision is a small function whose docstring names the RFC section it implements.
"""
