//go:build race

package main

// raceEnabled shrinks the heavier tests under the race detector, which
// slows the re-executed children as much as the tests themselves.
const raceEnabled = true
