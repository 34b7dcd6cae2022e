//go:build !linux

package main

// echoOff does nothing here: term.ReadPassword turns echo off once the
// prompt is written.
func echoOff(int) (restore func()) { return func() {} }
