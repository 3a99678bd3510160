"""The data plane: HTTP/1.1 server, cache handler, origin client, request coalescing."""
