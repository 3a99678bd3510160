"""Run h2load (Debian's nghttp2-client) as an HTTP/1.1 load generator and parse what it prints.

The hit benchmark's other client (``run.py --client h2load``, decision 0023): on 64 KiB responses it
costs ~10% less CPU per response than wrk, which reads 8 KiB per ``read(2)`` and asks
``ioctl(FIONREAD)`` after each; h2load also reads 8 KiB at a time, but goes on until ``EAGAIN``
without the ioctl. On 1 KiB responses it costs ~10% more.

Rules:
- ``--h1`` (HTTP/1.1 over cleartext), one thread, 50 keep-alive connections, one request in flight
  per connection (``-m1``: no pipelining), for a fixed duration (``-D``): the same load as wrk's.
- Latency: h2load prints no percentiles (only with a per-request log, which costs a ``write(2)``
  per response), so it reports the mean and the maximum time per request instead.
- Its CPU time is measured like wrk's (getrusage of reaped children around the run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from _wrk import run_client

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_DURATION = r"([\d.]+)(us|ms|s)"
_RPS = re.compile(r"^finished in \S+, ([\d.]+) req/s", re.M)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.M,
)
_REQUEST_TIME = re.compile(rf"^time for request:\s+{_DURATION}\s+{_DURATION}\s+{_DURATION}", re.M)


class H2loadError(RuntimeError):
    """h2load failed or printed something we cannot parse."""


@dataclass(frozen=True)
class H2loadResult:
    """One h2load run's figures: requests per second, mean and max latency in milliseconds
    (h2load prints no percentiles without a per-request log), requests done, errors and its CPU."""

    rps: float
    mean_ms: float
    max_ms: float
    requests: int
    errors: int
    """Requests that failed (status outside 2xx/3xx, or the stream broke) or timed out."""
    cpu: float
    """h2load's CPU time as a percentage of one core."""


def parse(text: str) -> tuple[float, float, float, int, int]:
    """(req/s, mean ms, max ms, requests done, errors) from h2load's output."""
    rps, requests, times = _RPS.search(text), _REQUESTS.search(text), _REQUEST_TIME.search(text)
    if rps is None or requests is None or times is None:
        raise H2loadError(f"cannot parse h2load output: {text.strip()[-300:]!r}")
    _lo, _lo_unit, hi, hi_unit, mean, mean_unit = times.groups()
    done, failed, timeout = int(requests.group(3)), int(requests.group(5)), int(requests.group(7))
    return (
        float(rps.group(1)),
        float(mean) * _UNIT_MS[mean_unit],
        float(hi) * _UNIT_MS[hi_unit],
        done,
        failed + timeout,
    )


def run(url: str, duration: int, connections: int = 50) -> H2loadResult:
    """Load ``url`` for ``duration`` seconds; raise H2loadError if h2load fails or no request succeeds."""
    argv = ["timeout", str(duration + 20), "h2load", "--h1", "-t1", f"-c{connections}", "-m1"]
    argv += [f"-D{duration}", url]
    out, cpu = run_client(argv, "h2load", H2loadError)
    rps, mean, hi, done, errors = parse(out)
    if rps == 0:
        raise H2loadError(f"h2load completed no request: {out.strip()[-300:]!r}")
    return H2loadResult(rps, mean, hi, done, errors, cpu)
