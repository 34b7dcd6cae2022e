//go:build !unix

package local

// syncDir does nothing where directories cannot be synced (Windows).
func syncDir(string) error { return nil }
