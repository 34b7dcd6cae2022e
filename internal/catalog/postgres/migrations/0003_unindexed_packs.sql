-- Opening a vault finds the packs it has to index without reading every
-- pack with its header: those recorded without a sealed header copy
-- (format 1, or a copy a catalog writer removed) by a partial index of
-- packs whose header is NULL, and those without lookup keys by
-- unindexed_packs, which AddPack, SetPackHeader and SetPackKeys keep in
-- the same transaction as the pack's row and which starts with every pack
-- that needs it now.
CREATE INDEX packs_headerless ON packs (vault) WHERE header IS NULL;

CREATE TABLE unindexed_packs (
	vault bytea NOT NULL,
	pack  bytea NOT NULL,
	PRIMARY KEY (vault, pack),
	FOREIGN KEY (vault, pack) REFERENCES packs (vault, id)
);

INSERT INTO unindexed_packs (vault, pack)
	SELECT p.vault, p.id FROM packs p
	WHERE p.header IS NULL OR NOT EXISTS (SELECT 1 FROM pack_keys k WHERE k.vault = p.vault AND k.pack = p.id);
