"""edgecache: a self-hosted edge cache whose strength is cache invalidation."""

__version__ = "0.1.0"
