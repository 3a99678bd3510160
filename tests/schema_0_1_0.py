"""The control database exactly as edgecache 0.1.0 created it, frozen for the upgrade tests.

0.1.0 ran ``metadata.create_all`` and recorded ``schema_version`` 1; these are the statements
``create_all`` emitted on each engine (generated once from 0.1.0's ``schema.py``, never edited).
"""

from __future__ import annotations

SQLITE = (
    """\
CREATE TABLE accounts (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	"plan" VARCHAR(16) NOT NULL,
	created_at DATETIME NOT NULL,
	CONSTRAINT pk_accounts PRIMARY KEY (id),
	CONSTRAINT ck_accounts_plan CHECK (plan IN ('free', 'pro', 'business', 'enterprise'))
)
""",
    """\
CREATE TABLE schema_version (
	version INTEGER NOT NULL,
	description VARCHAR(200) NOT NULL,
	applied_at DATETIME NOT NULL,
	CONSTRAINT pk_schema_version PRIMARY KEY (version)
)
""",
    """\
CREATE TABLE api_secrets (
	secret_id VARCHAR(36) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	name VARCHAR(120) NOT NULL,
	secret_key_enc TEXT NOT NULL,
	permissions TEXT NOT NULL,
	zones TEXT,
	created_at DATETIME NOT NULL,
	revoked_at DATETIME,
	CONSTRAINT pk_api_secrets PRIMARY KEY (secret_id),
	CONSTRAINT fk_api_secrets_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
)
""",
    """\
CREATE INDEX ix_api_secrets_account_id ON api_secrets (account_id)
""",
    """\
CREATE TABLE global_keys (
	id VARCHAR(32) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	email VARCHAR(254) NOT NULL,
	key_hash VARCHAR(64) NOT NULL,
	created_at DATETIME NOT NULL,
	CONSTRAINT pk_global_keys PRIMARY KEY (id),
	CONSTRAINT fk_global_keys_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id),
	CONSTRAINT uq_global_keys_email UNIQUE (email),
	CONSTRAINT uq_global_keys_key_hash UNIQUE (key_hash)
)
""",
    """\
CREATE INDEX ix_global_keys_account_id ON global_keys (account_id)
""",
    """\
CREATE TABLE tokens (
	id VARCHAR(32) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	name VARCHAR(120) NOT NULL,
	secret_hash VARCHAR(64) NOT NULL,
	permissions TEXT NOT NULL,
	zones TEXT,
	created_at DATETIME NOT NULL,
	expires_at DATETIME,
	revoked_at DATETIME,
	last_used_at DATETIME,
	CONSTRAINT pk_tokens PRIMARY KEY (id),
	CONSTRAINT fk_tokens_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id),
	CONSTRAINT uq_tokens_secret_hash UNIQUE (secret_hash)
)
""",
    """\
CREATE INDEX ix_tokens_account_id ON tokens (account_id)
""",
    """\
CREATE TABLE zones (
	id VARCHAR(32) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	name VARCHAR(253) NOT NULL,
	"plan" VARCHAR(16) NOT NULL,
	created_at DATETIME NOT NULL,
	CONSTRAINT pk_zones PRIMARY KEY (id),
	CONSTRAINT ck_zones_plan CHECK (plan IN ('free', 'pro', 'business', 'enterprise')),
	CONSTRAINT fk_zones_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
)
""",
    """\
CREATE INDEX ix_zones_account_id ON zones (account_id)
""",
    """\
CREATE TABLE purge_ledger (
	seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	zone_id VARCHAR(32) NOT NULL,
	mode VARCHAR(16) NOT NULL,
	selectors TEXT NOT NULL,
	principal VARCHAR(200) NOT NULL,
	dialect VARCHAR(16) NOT NULL,
	created_at DATETIME NOT NULL,
	job_id VARCHAR(32) NOT NULL,
	CONSTRAINT ck_purge_ledger_mode CHECK (mode IN ('delete', 'invalidate')),
	CONSTRAINT fk_purge_ledger_zone_id_zones FOREIGN KEY(zone_id) REFERENCES zones (id)
)
""",
    """\
CREATE INDEX ix_purge_ledger_job_id ON purge_ledger (job_id)
""",
    """\
CREATE TABLE tasks (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	job_id VARCHAR(32) NOT NULL,
	kind VARCHAR(8) NOT NULL,
	zone_id VARCHAR(32) NOT NULL,
	seq BIGINT,
	target TEXT NOT NULL,
	domain VARCHAR(253),
	type VARCHAR(24) NOT NULL,
	method VARCHAR(16),
	status VARCHAR(16) NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	fail_type VARCHAR(40),
	fail_message TEXT,
	principal VARCHAR(200) NOT NULL,
	dialect VARCHAR(16) NOT NULL,
	matched INTEGER,
	CONSTRAINT ck_tasks_kind CHECK (kind IN ('purge', 'prefetch')),
	CONSTRAINT ck_tasks_status CHECK (status IN ('processing', 'success', 'failed',
		'timeout', 'canceled', 'invalid')),
	CONSTRAINT fk_tasks_zone_id_zones FOREIGN KEY(zone_id) REFERENCES zones (id)
)
""",
    """\
CREATE INDEX ix_tasks_seq ON tasks (seq)
""",
    """\
CREATE INDEX ix_tasks_processing ON tasks (created_at) WHERE status = 'processing'
""",
    """\
CREATE INDEX ix_tasks_zone_kind_created ON tasks (zone_id, kind, created_at)
""",
    """\
CREATE INDEX ix_tasks_zone_kind_status_created ON tasks (zone_id, kind, status, created_at)
""",
    """\
CREATE INDEX ix_tasks_job ON tasks (job_id, zone_id, kind, created_at)
""",
    """\
CREATE INDEX ix_tasks_zone_kind_type_created ON tasks (zone_id, kind, type, created_at)
""",
)

POSTGRESQL = (
    """\
CREATE TABLE accounts (
	id VARCHAR(32) NOT NULL,
	name VARCHAR(255) NOT NULL,
	plan VARCHAR(16) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_accounts PRIMARY KEY (id),
	CONSTRAINT ck_accounts_plan CHECK (plan IN ('free', 'pro', 'business', 'enterprise'))
)
""",
    """\
CREATE TABLE schema_version (
	version INTEGER NOT NULL,
	description VARCHAR(200) NOT NULL,
	applied_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_schema_version PRIMARY KEY (version)
)
""",
    """\
CREATE TABLE api_secrets (
	secret_id VARCHAR(36) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	name VARCHAR(120) NOT NULL,
	secret_key_enc TEXT NOT NULL,
	permissions TEXT NOT NULL,
	zones TEXT,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	revoked_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_api_secrets PRIMARY KEY (secret_id),
	CONSTRAINT fk_api_secrets_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
)
""",
    """\
CREATE INDEX ix_api_secrets_account_id ON api_secrets (account_id)
""",
    """\
CREATE TABLE global_keys (
	id VARCHAR(32) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	email VARCHAR(254) NOT NULL,
	key_hash VARCHAR(64) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_global_keys PRIMARY KEY (id),
	CONSTRAINT fk_global_keys_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id),
	CONSTRAINT uq_global_keys_email UNIQUE (email),
	CONSTRAINT uq_global_keys_key_hash UNIQUE (key_hash)
)
""",
    """\
CREATE INDEX ix_global_keys_account_id ON global_keys (account_id)
""",
    """\
CREATE TABLE tokens (
	id VARCHAR(32) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	name VARCHAR(120) NOT NULL,
	secret_hash VARCHAR(64) NOT NULL,
	permissions TEXT NOT NULL,
	zones TEXT,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE,
	revoked_at TIMESTAMP WITH TIME ZONE,
	last_used_at TIMESTAMP WITH TIME ZONE,
	CONSTRAINT pk_tokens PRIMARY KEY (id),
	CONSTRAINT fk_tokens_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id),
	CONSTRAINT uq_tokens_secret_hash UNIQUE (secret_hash)
)
""",
    """\
CREATE INDEX ix_tokens_account_id ON tokens (account_id)
""",
    """\
CREATE TABLE zones (
	id VARCHAR(32) NOT NULL,
	account_id VARCHAR(32) NOT NULL,
	name VARCHAR(253) NOT NULL,
	plan VARCHAR(16) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	CONSTRAINT pk_zones PRIMARY KEY (id),
	CONSTRAINT ck_zones_plan CHECK (plan IN ('free', 'pro', 'business', 'enterprise')),
	CONSTRAINT fk_zones_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)
)
""",
    """\
CREATE INDEX ix_zones_account_id ON zones (account_id)
""",
    """\
CREATE TABLE purge_ledger (
	seq BIGINT GENERATED BY DEFAULT AS IDENTITY (START WITH 1),
	zone_id VARCHAR(32) NOT NULL,
	mode VARCHAR(16) NOT NULL,
	selectors TEXT NOT NULL,
	principal VARCHAR(200) NOT NULL,
	dialect VARCHAR(16) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	job_id VARCHAR(32) NOT NULL,
	CONSTRAINT pk_purge_ledger PRIMARY KEY (seq),
	CONSTRAINT ck_purge_ledger_mode CHECK (mode IN ('delete', 'invalidate')),
	CONSTRAINT fk_purge_ledger_zone_id_zones FOREIGN KEY(zone_id) REFERENCES zones (id)
)
""",
    """\
CREATE INDEX ix_purge_ledger_job_id ON purge_ledger (job_id)
""",
    """\
CREATE TABLE tasks (
	id BIGINT GENERATED BY DEFAULT AS IDENTITY (START WITH 1),
	job_id VARCHAR(32) NOT NULL,
	kind VARCHAR(8) NOT NULL,
	zone_id VARCHAR(32) NOT NULL,
	seq BIGINT,
	target TEXT NOT NULL,
	domain VARCHAR(253),
	type VARCHAR(24) NOT NULL,
	method VARCHAR(16),
	status VARCHAR(16) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	fail_type VARCHAR(40),
	fail_message TEXT,
	principal VARCHAR(200) NOT NULL,
	dialect VARCHAR(16) NOT NULL,
	matched INTEGER,
	CONSTRAINT pk_tasks PRIMARY KEY (id),
	CONSTRAINT ck_tasks_kind CHECK (kind IN ('purge', 'prefetch')),
	CONSTRAINT ck_tasks_status CHECK (status IN ('processing', 'success', 'failed',
		'timeout', 'canceled', 'invalid')),
	CONSTRAINT fk_tasks_zone_id_zones FOREIGN KEY(zone_id) REFERENCES zones (id)
)
""",
    """\
CREATE INDEX ix_tasks_seq ON tasks (seq)
""",
    """\
CREATE INDEX ix_tasks_processing ON tasks (created_at) WHERE status = 'processing'
""",
    """\
CREATE INDEX ix_tasks_zone_kind_created ON tasks (zone_id, kind, created_at)
""",
    """\
CREATE INDEX ix_tasks_zone_kind_status_created ON tasks (zone_id, kind, status, created_at)
""",
    """\
CREATE INDEX ix_tasks_job ON tasks (job_id, zone_id, kind, created_at)
""",
    """\
CREATE INDEX ix_tasks_zone_kind_type_created ON tasks (zone_id, kind, type, created_at)
""",
)

STAMP = "INSERT INTO schema_version (version, description, applied_at) VALUES (1, 'initial schema', :at)"
"""0.1.0's record of its schema version, written in the same transaction as the tables."""
