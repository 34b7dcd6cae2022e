package agent

// Matcher compiles the rules' patterns (only: no --exclude-if-present,
// caches, sizes or file systems, which need the files) into a function
// that says whether an absolute path, a directory when isDir is set, is
// left out. `coffer rewrite` uses it on a snapshot's trees.
func (r ExcludeRules) Matcher() (func(path string, isDir bool) bool, error) {
	x, err := compileExcludes(ExcludeRules{Patterns: r.Patterns}, nil)
	if err != nil {
		return nil, err
	}
	return x.match, nil
}
