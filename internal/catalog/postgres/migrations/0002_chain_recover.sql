-- Recover entries in the snapshot chain (kind 8, docs/format.md §8.8): a
-- snapshot whose object the store held entered a chain rebuilt by
-- coffer vault recover.
ALTER TABLE snapshot_chain DROP CONSTRAINT snapshot_chain_kind_check;
ALTER TABLE snapshot_chain ADD CONSTRAINT snapshot_chain_kind_check CHECK (kind BETWEEN 1 AND 8);
