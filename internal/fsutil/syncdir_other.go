//go:build !unix

package fsutil

// SyncDir does nothing where directories cannot be synced (Windows).
func SyncDir(string) error { return nil }
