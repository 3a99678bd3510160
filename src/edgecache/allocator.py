"""Which ``malloc`` a node runs on: jemalloc when it can, glibc's otherwise (decision 0019).

Why: glibc's ``malloc_trim``, which a mass purge needs to give memory back, holds an arena's lock for
milliseconds and the event loop waits on it at its next allocation (decision 0002, addendum 5);
jemalloc returns freed pages from its own background threads. An allocator cannot be swapped inside
a running process, so ``edgecache serve`` re-executes itself once, with the library in
``LD_PRELOAD`` (before any other value there) and ``MALLOC_CONF`` set, before it starts anything;
worker processes inherit that environment. A marker in the environment keeps the new process from
executing itself again.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgecache.store.blocks import JEMALLOC

log = logging.getLogger(__name__)

Setting = Literal["auto", "jemalloc", "system"]

LIBRARY = "libjemalloc.so.2"
MALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
"""Freed pages go back to the OS from jemalloc's background threads about a second after a purge
(``dirty_decay_ms``), without a lazy-free stage (``muzzy_decay_ms:0``) that RSS would still count."""
REEXEC_MARKER = "EDGECACHE_ALLOCATOR_REEXEC"


class AllocatorError(Exception):
    """The configured allocator cannot be used (the message says what to do)."""


def running() -> str:
    """The allocator this process runs on: ``jemalloc`` when its control call is linked in (it was
    preloaded), else ``system``."""
    return "jemalloc" if JEMALLOC else "system"


def candidates() -> list[Path]:
    """Where Debian (``libjemalloc2``) and other distributions put the library. The multiarch
    directory is also derived from the machine, for interpreters built without ``MULTIARCH``."""
    arches = [sysconfig.get_config_var("MULTIARCH") or "", f"{platform.machine()}-linux-gnu"]
    unique = dict.fromkeys(a for a in arches if a)
    multiarch = [f"{root}/{arch}" for arch in unique for root in ("/usr/lib", "/lib")]
    dirs = [*multiarch, "/usr/lib64", "/usr/lib", "/usr/local/lib"]
    return [Path(d) / LIBRARY for d in dirs]


def find(path: Path | None) -> Path | None:
    """The library: ``path`` when configured (and present), else the first of ``candidates``."""
    for option in [path] if path is not None else candidates():
        if option.is_file():
            return option
    return None


@dataclass(frozen=True)
class Choice:
    """What ``edgecache serve`` should run on, and why (for the start log line)."""

    library: Path | None
    """jemalloc to preload; None for the system allocator."""
    reason: str


def choose(setting: Setting, path: Path | None) -> Choice:
    """Decide from the setting and the library's presence; raise ``AllocatorError`` when jemalloc is
    required and missing."""
    if setting == "system":
        return Choice(None, 'runtime.allocator = "system"')
    library = find(path)
    if library is not None:
        return Choice(library, f"{library} found")
    looked = str(path) if path is not None else ", ".join(str(p) for p in candidates())
    if setting == "jemalloc":
        raise AllocatorError(
            f'runtime.allocator = "jemalloc" but {LIBRARY} was not found (looked at {looked}); '
            "install it (Debian: apt-get install libjemalloc2), set runtime.jemalloc_path, or set "
            'runtime.allocator to "auto" or "system"'
        )
    return Choice(None, f"{LIBRARY} not found (looked at {looked}); install libjemalloc2 to use it")


def preload_env(env: dict[str, str], library: Path) -> dict[str, str]:
    """``env`` with ``library`` first in ``LD_PRELOAD`` (the operator's entries kept after it) and
    ``MALLOC_CONF`` set unless the operator set it (theirs wins), plus the re-exec marker."""
    out = dict(env)
    out["LD_PRELOAD"] = ":".join(p for p in (str(library), env.get("LD_PRELOAD", "")) if p)
    out.setdefault("MALLOC_CONF", MALLOC_CONF)
    out[REEXEC_MARKER] = "1"
    return out


def ensure(setting: Setting, path: Path | None) -> None:
    """Re-execute this process (same interpreter, same arguments) on jemalloc when the setting asks
    for it and it is not running yet; return when nothing is to be done. Call before starting
    anything: ``os.execve`` replaces the process, keeping its pid."""
    # Already on jemalloc (preloaded by a service manager from anywhere): nothing to find or do.
    if running() == "jemalloc":
        return
    choice = choose(setting, path)
    if choice.library is None or REEXEC_MARKER in os.environ:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, preload_env(dict(os.environ), choice.library))


def report(setting: Setting, path: Path | None) -> None:
    """Log which allocator this process runs on, and why, once it is settled (the start log line).
    Raise ``AllocatorError`` when jemalloc is required and did not load."""
    if running() == "jemalloc":
        conf = os.environ.get("MALLOC_CONF", "")
        log.info("allocator: jemalloc (MALLOC_CONF=%r)", conf)
        if "background_thread:true" not in conf:
            # An operator's own MALLOC_CONF (theirs wins): without background threads, freed pages go
            # back only as later allocations let jemalloc decay them, and nothing trims instead.
            log.warning(
                "allocator: jemalloc without background_thread:true in MALLOC_CONF: memory a purge "
                "frees returns to the OS only as the node goes on allocating"
            )
        return
    choice = choose(setting, path)
    if choice.library is not None:
        if setting == "jemalloc":
            raise AllocatorError(f"{choice.library} was preloaded but the process does not run on it")
        line = f"allocator: system ({choice.library} did not load: the dynamic linker refused it)"
    else:
        line = f"allocator: system ({choice.reason})"
    log.info("%s", line)
