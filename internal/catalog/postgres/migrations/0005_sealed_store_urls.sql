-- Version 5: a vault's own store URL is sealed under a key derived from
-- the deployment key and bound to the vault's name (docs/format.md §1.1e),
-- so that a catalog writer can neither point a vault at a store of their
-- choosing nor move another vault's row. Version 4 kept the URLs in plain
-- text. They cannot be sealed here (the deployment key is not in the
-- database), and a plain row is exactly what the seal stops trusting, so
-- they are kept, unread by servers, in vault_stores_unsealed: a server
-- refuses such a vault and names the fix (docs/postgres.md, "Upgrading"):
-- the operator checks the URL and writes it to the vault's store.url in
-- one server's data directory, which seals it into vault_stores.
ALTER TABLE vault_stores RENAME TO vault_stores_unsealed;
CREATE TABLE vault_stores (
	name   text  COLLATE "C" NOT NULL PRIMARY KEY CHECK (name <> ''),
	sealed bytea NOT NULL
);
