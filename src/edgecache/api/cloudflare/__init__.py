"""The Cloudflare v4 dialect: routes, envelope, error codes and auth headers, over ``control/``."""
