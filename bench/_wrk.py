"""Run wrk (`-t1 -c50 --latency`, inside `timeout`) and parse what it prints.

Rules:
- One wrk thread and 50 keep-alive connections, as in the reference measurements.
- wrk's own CPU time is measured (getrusage of reaped children around the run): on 2 shared cores a
  wrk near 100% of one core means the figure is a lower bound for the server.
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RAND10K_LUA = """\
-- 10,000 warm keys, uniformly random (same Lua cost per request for every server)
request = function()
  return wrk.format("GET", string.format("/obj/%06d", math.random(0, 9999)))
end
"""

MISSMIX_LUA = """\
-- ~90% never-seen keys (each one a miss that goes to the origin), ~10% one hot key.
-- args[1] is the base of this run's number space, so no two runs share a miss URL.
local base, n = 0, 0
function init(args) base = tonumber(args[1]) or 0 end
request = function()
  if math.random() < 0.1 then return wrk.format("GET", "/small") end
  n = n + 1
  return wrk.format("GET", string.format("/obj/%d", base + n))
end
"""

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_TOTAL = re.compile(r"^\s*(\d+) requests in", re.M)


class WrkError(RuntimeError):
    """wrk failed or printed something we cannot parse."""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    """Non-2xx/3xx responses plus socket errors."""
    wrk_cpu: float
    """wrk's CPU time as a percentage of one core."""


def write_scripts(directory: Path) -> dict[str, Path]:
    out = {"rand10k": directory / "rand10k.lua", "missmix": directory / "missmix.lua"}
    out["rand10k"].write_text(RAND10K_LUA)
    out["missmix"].write_text(MISSMIX_LUA)
    return out


def parse(text: str) -> tuple[float, float, float, int, int]:
    """(req/s, p50 ms, p99 ms, total requests, errors) from wrk's output."""
    rps, total = _RPS.search(text), _TOTAL.search(text)
    lat = {pct: float(v) * _UNIT_MS[unit] for pct, v, unit in _LATENCY.findall(text)}
    if rps is None or total is None or set(lat) != {"50", "99"}:
        raise WrkError(f"cannot parse wrk output: {text.strip()[-300:]!r}")
    sock = _SOCKET.search(text)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    non2xx = _NON2XX.search(text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return float(rps.group(1)), lat["50"], lat["99"], int(total.group(1)), errors


def run_client(argv: list[str], name: str, error: type[Exception]) -> tuple[str, float]:
    """Run a load client's ``argv`` (wrapped in ``timeout``); return its stdout and its CPU time as a
    percentage of one core over the wall time; raise ``error`` if it exits nonzero."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate()
        except BaseException:  # Ctrl-C: `timeout` runs the client in its own process group; TERM reaches both
            proc.terminate()
            proc.wait(5)
            raise
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise error(f"{name} exited {proc.returncode}: {(err or out).strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, 100.0 * cpu / wall


def run(
    url: str, duration: int, script: Path | None = None, args: tuple[str, ...] = (), connections: int = 50
) -> WrkResult:
    argv = ["timeout", str(duration + 20), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    if args:
        argv += ["--", *args]
    out, cpu = run_client(argv, "wrk", WrkError)
    rps, p50, p99, total, errors = parse(out)
    return WrkResult(rps, p50, p99, total, errors, cpu)
