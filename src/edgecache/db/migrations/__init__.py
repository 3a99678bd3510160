"""Alembic revisions of the control database, shipped inside the package (no alembic.ini).

``edgecache.db.migrate`` runs them; ``env.py`` is Alembic's environment script and ``versions/``
holds one file per revision, forward only, in one line (one head).

Adding a revision (a table or column in ``edgecache.db.schema`` changes):
1. Change ``schema.py``.
2. Add ``versions/rNNNN_<what>.py`` with ``revision = "NNNN"`` (the next number) and
   ``down_revision`` = the current head; write the change out with ``op.create_table``,
   ``op.add_column`` (inside ``op.batch_alter_table`` for SQLite's sake when altering), ``op.create_index``,
   naming every constraint and index as ``schema.NAMING`` would. Never import ``schema.metadata``
   into a revision: a revision is frozen, the metadata moves on.
3. ``pytest tests/test_migrations.py``: the drift test lists whatever the revisions and
   ``schema.py`` still disagree on, on SQLite and PostgreSQL.
"""
