package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/protect"
)

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Store a vault's retention policy",
		Long: `A vault can store a retention policy (the --keep-* rules of coffer forget). A
vault server applies it every day; on a local vault "coffer forget" with the
same flags, or a scheduled job, applies it. An immutable vault's policy can be
lengthened but not shortened. A vault server stores only policies grouped by
host (--group-by host, host,paths or host,tags; the default is host,paths), so
that one machine's backups never count against another's.`,
	}
	cmd.AddCommand(newPolicySetCmd(a), newPolicyShowCmd(a))
	return cmd
}

func newPolicySetCmd(a *app) *cobra.Command {
	var pf policyFlags
	var clear, jsonOut bool
	cmd := &cobra.Command{
		Use:   "set [VAULT]",
		Short: "Store the vault's retention policy",
		Example: `  coffer policy set prod --keep-daily 7 --keep-weekly 5 --keep-monthly 12
  coffer policy set --clear`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			p, has, err := pf.policy(cmd)
			if err != nil {
				return err
			}
			var stored string
			switch {
			case clear && has:
				return errors.New("give --keep-* flags or --clear, not both")
			case clear:
			case !has:
				return errors.New("give the policy's --keep-* flags, or --clear to remove it")
			default:
				b, err := json.Marshal(p)
				if err != nil {
					return err
				}
				stored = string(b)
			}
			return a.changeSettings(cmd.Context(), api.SettingsChange{Policy: &stored}, false, jsonOut)
		},
	}
	pf.register(cmd, true)
	cmd.Flags().BoolVar(&clear, "clear", false, "remove the stored policy (snapshots are then kept until forgotten by hand)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the settings as JSON")
	return cmd
}

func newPolicyShowCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "show [VAULT]",
		Short:   "Show the vault's stored retention policy",
		Example: "  coffer policy show prod --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			ctx := cmd.Context()
			v, closer, err := a.openProtection(ctx)
			if err != nil {
				return err
			}
			defer closer.Close()
			s, err := v.settings(ctx)
			if err != nil {
				return err
			}
			if jsonOut {
				if s.Policy == "" {
					fmt.Fprintln(a.jsonStdout, "null")
					return nil
				}
				fmt.Fprintln(a.jsonStdout, s.Policy)
				return nil
			}
			if s.Policy == "" {
				fmt.Fprintln(a.stdout, "no stored policy: snapshots are kept until forgotten")
				return nil
			}
			p, err := protect.ParsePolicy(s.Policy)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "policy: %s\n", p)
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
