//go:build !unix

package platform

// lockFile does nothing where flock is missing: rotation of a key file
// shared by concurrent processes is then not serialised.
func lockFile(string) (func(), error) { return func() {}, nil }
