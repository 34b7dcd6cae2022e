-- Coffer catalog schema, version 1 (PostgreSQL).
--
-- Conventions, as in the SQLite catalog: IDs are 32-byte bytea; times are
-- bigint Unix nanoseconds (UTC), NULL for a zero time where one is
-- allowed; uint64 values are stored bit for bit as bigint; text sorts by
-- its bytes (COLLATE "C"), whatever the database's locale.

-- Names compared without regard to ASCII case (SQLite's NOCASE), and
-- only ASCII: lower() would also fold other letters by the collation.
CREATE FUNCTION coffer_ascii_lower(s text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	AS $$ SELECT translate(s, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') $$;

CREATE TABLE vaults (
	id      bytea  NOT NULL PRIMARY KEY CHECK (length(id) = 32),
	name    text COLLATE "C"   NOT NULL UNIQUE CHECK (name <> ''),
	created bigint NOT NULL,
	deleted bigint -- NULL: not deleted; a deleted vault's name stays taken
);

CREATE TABLE packs (
	vault       bytea  NOT NULL REFERENCES vaults (id),
	id          bytea  NOT NULL CHECK (length(id) = 32),
	size        bigint NOT NULL,
	dek_version bigint NOT NULL,
	blobs       bigint NOT NULL,
	created     bigint NOT NULL,
	condemned   bigint, -- NULL while in use
	header      bytea,  -- the sealed header; NULL for a format 1 pack
	PRIMARY KEY (vault, id)
);

-- Format 1's per-blob rows; two blobs cannot claim the same bytes of a
-- pack.
CREATE TABLE blobs (
	vault      bytea  NOT NULL,
	id         bytea  NOT NULL CHECK (length(id) = 32),
	type       bigint NOT NULL,
	pack       bytea  NOT NULL,
	"offset"   bigint NOT NULL,
	length     bigint NOT NULL,
	raw_length bigint NOT NULL,
	PRIMARY KEY (vault, pack, "offset"),
	FOREIGN KEY (vault, pack) REFERENCES packs (vault, id)
);

-- The packs' lookup keys (docs/format.md §4.2): one row per keyed pack,
-- and one row of blob_keys per key, so that finding the packs that may
-- hold a blob is one index probe.
CREATE TABLE pack_keys (
	num   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	vault bytea  NOT NULL,
	pack  bytea  NOT NULL,
	keys  bytea  NOT NULL CHECK (length(keys) % 8 = 0),
	UNIQUE (vault, pack),
	FOREIGN KEY (vault, pack) REFERENCES packs (vault, id)
);
CREATE TABLE blob_keys (
	key bigint NOT NULL,
	num bigint NOT NULL,
	PRIMARY KEY (key, num)
);
CREATE INDEX blob_keys_by_num ON blob_keys (num);

CREATE TABLE snapshots (
	vault       bytea  NOT NULL REFERENCES vaults (id),
	id          bytea  NOT NULL CHECK (length(id) = 32),
	time        bigint NOT NULL,
	host        text COLLATE "C"   NOT NULL,
	paths       text COLLATE "C"   NOT NULL, -- a JSON array of strings
	tags        text COLLATE "C"   NOT NULL, -- a JSON array of strings
	tree        bytea  NOT NULL CHECK (length(tree) = 32),
	parent      bytea           CHECK (length(parent) = 32), -- NULL when none
	files       bigint NOT NULL,
	dirs        bigint NOT NULL,
	bytes       bigint NOT NULL,
	bytes_added bigint NOT NULL,
	duration_ns bigint NOT NULL,
	deleted     bigint,           -- NULL while live
	deleted_by  text COLLATE "C" CHECK (deleted IS NOT NULL OR deleted_by IS NULL),
	domain      text COLLATE "C"   NOT NULL DEFAULT '' CHECK (length(domain) <= 64),
	copy        bytea  CHECK (copy IS NULL OR length(copy) = 72),
	PRIMARY KEY (vault, id)
);
CREATE INDEX snapshots_by_time ON snapshots (vault, time, id);

CREATE TABLE snapshot_chain (
	vault     bytea  NOT NULL REFERENCES vaults (id),
	seq       bigint NOT NULL CHECK (seq >= 1),
	kind      bigint NOT NULL CHECK (kind BETWEEN 1 AND 7),
	snapshot  bytea  NOT NULL CHECK (length(snapshot) = 32),
	time      bigint NOT NULL,
	principal text COLLATE "C"   NOT NULL,
	digest    bytea  NOT NULL CHECK (length(digest) = 32),
	mac       bytea  NOT NULL CHECK (length(mac) = 32),
	PRIMARY KEY (vault, seq)
);

CREATE TABLE principals (
	id          text COLLATE "C"   NOT NULL PRIMARY KEY CHECK (id <> ''),
	name        text COLLATE "C"   NOT NULL UNIQUE CHECK (name <> ''),
	kind        text COLLATE "C"   NOT NULL CHECK (kind IN ('user', 'agent')),
	password    text COLLATE "C"   NOT NULL, -- '' when none
	created     bigint NOT NULL,
	created_by  text COLLATE "C"   NOT NULL,
	password_by text COLLATE "C"   NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX principals_by_folded_name ON principals (coffer_ascii_lower(name));

CREATE TABLE role_assignments (
	principal  text COLLATE "C"   NOT NULL REFERENCES principals (id),
	role       text COLLATE "C"   NOT NULL CHECK (role <> ''),
	vault      text COLLATE "C"   NOT NULL, -- '' for server-wide
	created    bigint NOT NULL,
	created_by text COLLATE "C"   NOT NULL,
	PRIMARY KEY (principal, role, vault)
);

-- Only the token's hash is kept; rows are never deleted.
CREATE TABLE tokens (
	id         text COLLATE "C"   NOT NULL PRIMARY KEY CHECK (id <> ''),
	hash       bytea  NOT NULL UNIQUE CHECK (length(hash) = 32),
	name       text COLLATE "C"   NOT NULL,
	role       text COLLATE "C"   NOT NULL,
	vault      text COLLATE "C"   REFERENCES vaults (name) CHECK (vault <> ''), -- NULL: server-wide
	created    bigint NOT NULL,
	expires    bigint, -- NULL: never
	revoked    bigint, -- NULL: active
	created_by text COLLATE "C",   -- NULL: the initial owner token
	principal  text COLLATE "C"   REFERENCES principals (id)
);
CREATE INDEX tokens_by_created ON tokens (created, id);

-- Rows are only ever added; id orders events of the same time.
CREATE TABLE key_events (
	id        bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	vault     bytea   NOT NULL REFERENCES vaults (id),
	time      bigint  NOT NULL,
	principal text COLLATE "C"    NOT NULL,
	event     text COLLATE "C"    NOT NULL CHECK (event <> ''),
	kek       text COLLATE "C"    NOT NULL,
	detail    text COLLATE "C"    NOT NULL,
	ok        boolean NOT NULL
);
CREATE INDEX key_events_by_time ON key_events (vault, time, id);

CREATE TABLE vault_settings (
	vault            bytea   NOT NULL PRIMARY KEY REFERENCES vaults (id),
	soft_delete      text COLLATE "C"    NOT NULL CHECK (soft_delete IN ('on', 'off', 'always-on')),
	soft_delete_days bigint  NOT NULL CHECK (soft_delete_days BETWEEN 14 AND 180),
	immutability     text COLLATE "C"    NOT NULL CHECK (immutability IN ('disabled', 'enabled', 'locked')),
	min_retention_ns bigint  NOT NULL CHECK (min_retention_ns >= 0),
	single_user      boolean NOT NULL,
	policy           text COLLATE "C"    NOT NULL, -- '' when none
	updated          bigint  NOT NULL,
	dedup_scope      text COLLATE "C"    NOT NULL DEFAULT 'vault' CHECK (dedup_scope IN ('vault', 'source'))
);

CREATE TABLE vault_events (
	id        bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	vault     bytea   NOT NULL REFERENCES vaults (id),
	time      bigint  NOT NULL,
	principal text COLLATE "C"    NOT NULL,
	event     text COLLATE "C"    NOT NULL CHECK (event <> ''),
	detail    text COLLATE "C"    NOT NULL,
	ok        boolean NOT NULL
);
CREATE INDEX vault_events_by_time ON vault_events (vault, time, id);

CREATE TABLE sessions (
	id        text COLLATE "C"   NOT NULL PRIMARY KEY CHECK (id <> ''),
	vault     bytea  NOT NULL REFERENCES vaults (id),
	kind      text COLLATE "C"   NOT NULL,
	principal text COLLATE "C"   NOT NULL,
	started   bigint NOT NULL,
	touched   bigint NOT NULL
);
CREATE INDEX sessions_by_vault ON sessions (vault, started, id);

CREATE TABLE requests (
	id        text COLLATE "C"   NOT NULL PRIMARY KEY CHECK (id <> ''),
	vault     bytea  REFERENCES vaults (id), -- NULL: server-wide
	op        text COLLATE "C"   NOT NULL CHECK (op <> ''),
	params    text COLLATE "C", -- JSON (checked by the catalog), NULL when none
	summary   text COLLATE "C"   NOT NULL,
	requester text COLLATE "C"   NOT NULL,
	created   bigint NOT NULL,
	expires   bigint NOT NULL,
	state     text COLLATE "C"   NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
	decider   text COLLATE "C",
	decided   bigint,
	CHECK ((state = 'pending') = (decided IS NULL)),
	CHECK (decided IS NOT NULL OR decider IS NULL)
);
CREATE INDEX requests_by_created ON requests (created, id);

CREATE TABLE key_anchors (
	vault        bytea  NOT NULL PRIMARY KEY REFERENCES vaults (id),
	generation   bigint NOT NULL CHECK (generation > 0),
	mac          bytea  NOT NULL CHECK (length(mac) = 32),
	root_commit  bytea  NOT NULL CHECK (length(root_commit) = 32),
	kek_provider text COLLATE "C"   NOT NULL,
	kek_id       text COLLATE "C"   NOT NULL,
	kek_version  text COLLATE "C"   NOT NULL,
	alg          text COLLATE "C"   NOT NULL,
	time         bigint NOT NULL
);
CREATE TABLE key_proposals (
	vault      bytea  NOT NULL REFERENCES vaults (id),
	generation bigint NOT NULL CHECK (generation > 0),
	mac        bytea  NOT NULL CHECK (length(mac) = 32),
	time       bigint NOT NULL,
	PRIMARY KEY (vault, generation, mac)
);

-- The tamper-evident audit log (docs/audit.md): append only.
CREATE TABLE audit_entries (
	idx    bigint NOT NULL PRIMARY KEY CHECK (idx >= 0),
	record bytea  NOT NULL
);
CREATE TABLE audit_hashes (
	idx  bigint NOT NULL PRIMARY KEY CHECK (idx >= 0),
	hash bytea  NOT NULL CHECK (length(hash) = 32)
);
CREATE TABLE audit_checkpoints (
	size bigint NOT NULL PRIMARY KEY CHECK (size > 0),
	note text COLLATE "C"   NOT NULL,
	time bigint NOT NULL
);
CREATE FUNCTION coffer_audit_append_only() RETURNS trigger LANGUAGE plpgsql
	AS $$ BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
	FOR EACH ROW EXECUTE FUNCTION coffer_audit_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
	FOR EACH STATEMENT EXECUTE FUNCTION coffer_audit_append_only();
CREATE TRIGGER audit_hashes_append_only BEFORE UPDATE OR DELETE ON audit_hashes
	FOR EACH ROW EXECUTE FUNCTION coffer_audit_append_only();
CREATE TRIGGER audit_hashes_no_truncate BEFORE TRUNCATE ON audit_hashes
	FOR EACH STATEMENT EXECUTE FUNCTION coffer_audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
	FOR EACH ROW EXECUTE FUNCTION coffer_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION coffer_audit_append_only();
