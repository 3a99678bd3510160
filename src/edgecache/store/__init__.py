"""Cache tiers: where entries live between requests.

``entry`` defines what is stored (``partial`` the byte ranges of a 206), ``base`` the interface
every tier implements, ``memory`` the in-process tier with SIEVE eviction. A new tier (the on-disk
Cache Reserve) is one more module that implements ``base.Tier``.
"""
