def untrack(obj: object, /) -> None:
    """Take ``obj`` out of the cyclic garbage collector's view (reference counting still frees it)."""
