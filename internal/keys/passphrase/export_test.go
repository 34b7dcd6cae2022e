package passphrase

// Cheap parameters for tests only (docs: CONVENTIONS "cheap key
// derivation for tests only through a test helper, never a runtime flag").
func CheapParams() Params { return Params{Time: 1, MemoryKiB: 64, Threads: 1} }

// TestingOptions are Options with cheap parameters for new slots and a floor
// that accepts them.
func TestingOptions(source string) Options {
	return Options{Source: source, params: CheapParams(), floor: CheapParams()}
}

// WithFloor returns o reading slots with floor f.
func WithFloor(o Options, f Params) Options { o.floor = f; return o }
