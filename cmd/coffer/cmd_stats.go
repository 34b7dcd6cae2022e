package main

import "github.com/spf13/cobra"

func newStatsCmd(a *app) *cobra.Command { return &cobra.Command{Use: "stats", Hidden: true} }
