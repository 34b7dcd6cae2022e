package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/tlsconf"
)

func newDoctorCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Diagnose connections to a vault server",
	}
	cmd.AddCommand(newDoctorTLSCmd(a))
	return cmd
}

func newDoctorTLSCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "tls https://host:port",
		Short: "Check a server's TLS: version, cipher suite, chain, expiry, fingerprints",
		Long: `Connect to a server and report its TLS: the negotiated version and cipher
suite, the certificate chain with expiry dates and SHA-256 fingerprints (of the
certificate, which --fingerprint pins, and of its public key, SPKI), whether
this machine trusts it (with --cacert and --fingerprint as given), and whether
the server also accepts TLS 1.0/1.1 or weak cipher suites. The verdict is ok,
warning (for example a certificate expiring within 30 days) or fail; fail exits 1.`,
		Example: `  coffer doctor tls https://backup.example.com:8443
  coffer doctor tls https://backup.example.com:8443 --cacert /etc/coffer/ca.pem --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := a.tlsOptions()
			rep, err := tlsconf.Probe(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			if jsonOut {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else if err := rep.WriteText(a.stdout); err != nil {
				return err
			}
			if rep.Status == tlsconf.StatusFail {
				return errors.New(rep.Verdict)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the report as JSON")
	return cmd
}
