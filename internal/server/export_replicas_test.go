package server

import "github.com/coffer-backup/coffer/internal/seal"

// SealStoreURL seals url as vault name's store row under deploymentKey,
// as a server of the deployment does: for tests that play someone who
// holds a server's disk and writes the catalog.
func SealStoreURL(deploymentKey seal.Key, name, url string) []byte {
	return newStoreURLSeal(deploymentKey).seal(name, url)
}
