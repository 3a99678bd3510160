"""The built-in demo origin, started by ``edgecache serve`` when no configuration is given."""
