//go:build !linux

package local

// publish links tmp to final unless final exists (vault.ErrExists), then
// removes tmp. On failure tmp is left in place.
func (s *Store) publish(tmp, final string) error {
	return linkPublish(tmp, final)
}
