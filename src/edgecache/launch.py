"""The ``edgecache`` console script: settles ``serve``'s allocator before the CLI is imported.

Why: importing the CLI imports the whole node (~0.8 s of CPU); ``serve`` re-executes itself on
jemalloc (``edgecache.allocator``, decision 0019), so this entry point reads the configuration
first, with only pydantic loaded, and re-executes before those imports. Anything it does not
understand (no ``serve``, an unusual option spelling, a configuration that does not validate) is
left to the CLI, which makes the same check itself after its imports and reports the errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import ValidationError

from edgecache import allocator
from edgecache.config import Config, demo_config, load_config


def _serve_config(argv: list[str]) -> Config | None:
    """The configuration ``edgecache serve`` would load from ``argv``, or None when unsure."""
    if argv[:1] != ["serve"]:
        return None
    rest = argv[1:]
    if not rest:
        return demo_config()
    if len(rest) == 2 and rest[0] in ("--config", "-c"):
        try:
            return load_config(Path(rest[1]))
        except (OSError, ValueError, ValidationError):
            return None
    return None


def main() -> None:
    """Console-script entry point."""
    cfg = _serve_config(sys.argv[1:])
    if cfg is not None:
        try:
            allocator.ensure(cfg.runtime.allocator, cfg.runtime.jemalloc_path)
        except allocator.AllocatorError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
    from edgecache.cli import main as cli_main

    cli_main()
