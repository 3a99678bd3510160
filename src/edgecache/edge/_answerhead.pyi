def answer_head(status_line: bytes, head: bytes, fields: bytes, length: int, connection: bytes, /) -> bytes:
    """``status_line + head + fields + b"Content-Length: %d\\r\\n" % length + connection + b"\\r\\n"``
    in one copy (``_answerhead.c``). Raises TypeError for pieces that are not bytes, ValueError for
    a negative length."""
