-- The packs that opening a vault has to index: those recorded without a
-- sealed header copy (format 1) or without lookup keys. AddPack,
-- SetPackHeader and SetPackKeys keep the list in the same transaction as
-- the pack's row, so that finding them costs one index range, not a scan
-- of every pack with its header. It starts with every pack that needs it
-- now.
CREATE TABLE unindexed_packs (
	vault bytea NOT NULL,
	pack  bytea NOT NULL,
	PRIMARY KEY (vault, pack),
	FOREIGN KEY (vault, pack) REFERENCES packs (vault, id)
);

INSERT INTO unindexed_packs (vault, pack)
	SELECT p.vault, p.id FROM packs p
	WHERE p.header IS NULL OR NOT EXISTS (SELECT 1 FROM pack_keys k WHERE k.vault = p.vault AND k.pack = p.id);
