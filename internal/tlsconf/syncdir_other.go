//go:build !unix

package tlsconf

// syncDir does nothing where directories cannot be synced (Windows).
func syncDir(string) error { return nil }
