"""The Tencent EdgeOne API 3.0 dialect (``teo``, version 2022-09-01): TC3-HMAC-SHA256
authentication, the ``{"Response": ...}`` envelope and action dispatch at ``POST /``, over
``control/``. Action handlers register themselves with ``dispatch.register``."""
