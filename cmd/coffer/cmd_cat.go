package main

import "github.com/spf13/cobra"

func newCatCmd(a *app) *cobra.Command { return &cobra.Command{Use: "cat", Hidden: true} }
