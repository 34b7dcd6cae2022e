-- What servers on different hosts share through the catalog rather than a
-- data directory (docs/postgres.md, "Several servers").
--
-- vault_stores: a vault's own store URL (coffer vault create --store),
-- keyed by the vault's name because the URL is needed to open the store
-- before the vault's row exists. It holds no credentials.
CREATE TABLE vault_stores (
	name text COLLATE "C" NOT NULL PRIMARY KEY CHECK (name <> ''),
	url  text NOT NULL CHECK (url <> '')
);

-- platform_keys: the versions of the platform key, each sealed under the
-- deployment key every server is given (docs/format.md §1.1); the newest
-- version is the current one. A row is written once and never updated;
-- retiring a version deletes its row.
CREATE TABLE platform_keys (
	key_id  text   COLLATE "C" NOT NULL CHECK (key_id <> ''),
	version bigint NOT NULL CHECK (version > 0),
	created bigint NOT NULL,
	sealed  bytea  NOT NULL,
	PRIMARY KEY (key_id, version)
);
