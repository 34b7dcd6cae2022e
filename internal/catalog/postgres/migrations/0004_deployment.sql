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
-- retiring a version deletes its row. The version is the key: two servers
-- can never both add version N (the second is refused and adopts the
-- first's), and every row names the same key ID.
CREATE TABLE platform_keys (
	version bigint NOT NULL PRIMARY KEY CHECK (version > 0),
	key_id  text   COLLATE "C" NOT NULL CHECK (key_id <> ''),
	created bigint NOT NULL,
	sealed  bytea  NOT NULL
);

-- key_uris: for a vault wrapped by a customer-managed key, the URI that
-- reaches the key (coffer key use-cmk), sealed under a key derived from
-- the deployment key (it may hold a PIN). Keyed by the vault's ID and the
-- key ("provider key-id"); a vault switched from one customer key to
-- another has both until the switch is complete.
CREATE TABLE key_uris (
	vault  bytea NOT NULL CHECK (length(vault) = 32),
	kek    text  COLLATE "C" NOT NULL CHECK (kek <> ''),
	sealed bytea NOT NULL,
	PRIMARY KEY (vault, kek)
);
