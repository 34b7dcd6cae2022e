package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/tlsconf"
)

func newServerCmd(a *app) *cobra.Command {
	var dataDir, listen, certFile, keyFile, tlsMin, logFormat string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the vault server (HTTPS only)",
		Long: `Run the vault server: the vault engine behind an HTTPS API, for agents on
other machines. There is no plaintext listener; TLS 1.2 is the minimum (1.3 with
--tls-min 1.3) and TLS 1.2 is limited to ECDHE key exchange with AEAD ciphers.

On first start without --tls-cert the server creates a local CA and a server
certificate for this host's names, the given --host names and loopback, writes
the CA to DATA/tls/ca.pem and prints the server certificate's fingerprint:
agents trust it with --cacert ca.pem or --fingerprint. It also issues a
one-time owner token into DATA/initial-owner-token (mode 0600); it is never
logged.

SIGTERM or Ctrl-C drains: requests in flight finish, open packs are stored,
then the server exits.`,
		Example: `  coffer server --data /var/lib/coffer
  coffer server --data /var/lib/coffer --listen :8443 --host backup.example.com
  coffer server --data /var/lib/coffer --tls-cert /etc/coffer/cert.pem --tls-key /etc/coffer/key.pem --tls-min 1.3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return errors.New("give the server's data directory with --data DIR")
			}
			dir, err := filepath.Abs(dataDir)
			if err != nil {
				return err
			}
			minVer, err := tlsconf.ParseMinVersion(tlsMin)
			if err != nil {
				return err
			}
			var h slog.Handler = slog.NewTextHandler(a.stderr, nil)
			if logFormat == "json" {
				h = slog.NewJSONHandler(a.stderr, nil)
			}
			log := slog.New(h)
			ctx := cmd.Context()
			srv, first, err := server.Open(ctx, server.Options{DataDir: dir, Logger: log, Now: a.now})
			if err != nil {
				return err
			}
			defer srv.Close()
			var mat *tlsconf.Material
			if certFile != "" || keyFile != "" {
				if certFile == "" || keyFile == "" {
					return errors.New("give both --tls-cert and --tls-key, or neither (then a local CA is used)")
				}
				if mat, err = tlsconf.LoadFiles(certFile, keyFile); err != nil {
					return err
				}
			} else {
				names := append([]string{}, hosts...)
				if hn, err := os.Hostname(); err == nil && hn != "" {
					names = append(names, hn)
				}
				if mat, _, err = tlsconf.LoadOrCreate(filepath.Join(dir, "tls"), names, a.now()); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "local CA %s (%s): agents trust it with --cacert, or pin the server certificate with --fingerprint\n",
					filepath.Join(dir, "tls", tlsconf.CACertName), mat.CAFingerprint())
			}
			cfg, err := tlsconf.ServerConfig(mat, minVer)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "server certificate fingerprint: %s\n", tlsconf.Fingerprint(mat.Leaf.Raw))
			if first {
				fmt.Fprintf(a.stdout, "initial owner token written to %s (read it, then delete the file)\n", server.InitialTokenFile(dir))
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "listening on https://%s\n", displayAddr(ln.Addr()))
			if a.onListen != nil {
				a.onListen(ln.Addr().String())
			}
			return srv.Serve(ctx, ln, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", "", "data directory: catalog, keys, vault stores, TLS material")
	f.StringVar(&listen, "listen", ":8443", "address to listen on")
	f.StringVar(&certFile, "tls-cert", "", "server certificate chain (PEM); default: a local CA's")
	f.StringVar(&keyFile, "tls-key", "", "server private key (PEM)")
	f.StringVar(&tlsMin, "tls-min", "1.2", "minimum TLS version: 1.2 or 1.3")
	f.StringArrayVar(&hosts, "host", nil, "extra DNS name or IP for the local CA's server certificate (repeatable)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

func displayAddr(a net.Addr) string {
	s := a.String()
	if strings.HasPrefix(s, "[::]:") {
		return "localhost:" + strings.TrimPrefix(s, "[::]:")
	}
	if strings.HasPrefix(s, "0.0.0.0:") {
		return "localhost:" + strings.TrimPrefix(s, "0.0.0.0:")
	}
	return s
}

var _ = context.Background
