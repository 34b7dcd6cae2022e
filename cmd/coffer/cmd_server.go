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
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/tlsconf"
)

func newServerCmd(a *app) *cobra.Command {
	var dataDir, listen, certFile, keyFile, tlsMin, logFormat, retentionAt, catalogURL, storeURL, deploymentKey string
	var hosts, pkcs11Modules, keyDirs []string
	var keyTTL, postureRPO, postureCheck time.Duration
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

Keys: a vault's unwrapped keys stay in memory for --key-ttl; after it the
server unwraps them again with the vault's key encryption key, which is when a
revoked customer key takes effect. The platform key (DATA/keys/platform.key)
rotates by itself every COFFER_KEK_ROTATION (default 90d); the server then
rewraps every vault and deletes the versions no vault needs any more (a vault
that cannot be read keeps them all, and its key log says so). A customer key URI
sent with "coffer key use-cmk" may only name the PKCS#11 modules given with
--pkcs11-module and files inside the --key-dir directories.

Stored retention policies (coffer policy set) are applied once a day, at
--retention-at (default 03:00) in this machine's time zone (TZ), or, when the
server was not running then, within a minute of its next start that day. A
run applies only settings stored at least an hour before its time: a policy
stored (or any settings change made) later waits for the next day's run,
which leaves time for "coffer forget --policy --dry-run".

The data directory holds the server's keys and must be private to the
user the server runs as: the server refuses to start when DIR, its keys,
audit or tls directory (mode 0700) or a key or the catalog in them (mode
0600) is open to other users, and says which to chmod.

Stores: by default each vault's store is a directory under DATA/vaults. With
--store s3://BUCKET/PREFIX?endpoint=https://s3.example:9000&region=eu-west-2
each vault lives in an S3-compatible bucket under PREFIX/vaults/NAME (the
catalog, the keys and the audit log stay in DATA). Credentials come from the
standard AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared files
(~/.aws, AWS_PROFILE), web identity, the ECS or EC2 instance role; never from
the URL. Other parameters: path-style=true|false (default true with an
endpoint), ca-file=PEM for a private endpoint's CA. Give the same --store on
every start. With a bucket created with Object Lock, a vault whose
immutability is locked gets COMPLIANCE retention on its objects
(docs/operations.md).

Posture (coffer posture, docs/posture.md): the server holds each vault to a
recovery point objective, --posture-rpo (default 24h: every source's newest
backup and source report must be younger), and to a check --read-data within
--posture-check-age (default 31d). Once a day it records each vault's posture
in the audit log.

The catalog is the SQLite file in the data directory, unless --catalog (or
COFFER_CATALOG, which keeps a password out of the process list) gives a
postgres:// URL: then several servers, each given the same URL, serve the
same vaults, and background jobs run on one of them at a time
(docs/postgres.md). The catalog then keeps the list of vaults, their own
store URLs, customer-key URIs and the platform key, the last two sealed
under the deployment key: the first
server makes DATA/keys/deployment.key; give every other server a copy (or
name it with --deployment-key), the same audit signing key (DATA/audit/),
and the same --store, and each its own data directory. The commands run on the server
machine (server approver-token, user assign-approver) read COFFER_CATALOG
too.

SIGTERM or Ctrl-C drains: requests in flight finish, open packs are stored,
then the server exits.`,
		Example: `  coffer server --data /var/lib/coffer
  coffer server --data /var/lib/coffer --listen :8443 --host backup.example.com --retention-at 01:30
  coffer server --data /var/lib/coffer --tls-cert /etc/coffer/cert.pem --tls-key /etc/coffer/key.pem --tls-min 1.3
  coffer server --data /var/lib/coffer --store 's3://backups/coffer?endpoint=https://s3.example:9000&region=eu-west-2'
  coffer server --data /var/lib/coffer --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --key-dir /etc/coffer/keys --key-ttl 5m
  COFFER_CATALOG=postgres://coffer@db.example.com/coffer coffer server --data /srv/coffer`,
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
				h = slog.NewJSONHandler(&termWriter{w: a.rawStderr, json: true}, nil)
			}
			log := slog.New(h)
			ctx := cmd.Context()
			rotation, err := a.kekRotation()
			if err != nil {
				return err
			}
			if _, err := server.ParseTimeOfDay(retentionAt); err != nil {
				return fmt.Errorf("--retention-at: %w", err)
			}
			if catalogURL == "" {
				catalogURL = a.getenv(server.CatalogEnv)
			}
			if catalogURL != "" && !postgres.IsURL(catalogURL) {
				return errors.New("--catalog: give a postgres:// URL, or leave it out for the SQLite file in the data directory")
			}
			if deploymentKey != "" {
				if catalogURL == "" {
					return errors.New("--deployment-key: only servers sharing a PostgreSQL catalog (--catalog) have a deployment key")
				}
				if deploymentKey, err = filepath.Abs(deploymentKey); err != nil {
					return err
				}
			}
			opt := server.Options{DataDir: dir, Catalog: catalogURL, DeploymentKey: deploymentKey, Logger: log, Now: a.now, KeyTTL: keyTTL, KEKRotation: rotation,
				PKCS11Modules: pkcs11Modules, KeyDirs: keyDirs, RetentionAt: retentionAt, Location: time.Local,
				Posture: posture.Policy{RPO: postureRPO, CheckMaxAge: postureCheck}}
			if postureRPO <= 0 || postureCheck <= 0 {
				return errors.New("--posture-rpo and --posture-check-age: give positive durations, e.g. 24h and 31d")
			}
			switch {
			case keyTTL < 0:
				return errors.New("--key-ttl: give a positive duration, or 0 to keep keys while a vault is open")
			case keyTTL == 0:
				opt.KeyTTL = -1
			}
			if rotation == 0 {
				opt.KEKRotation = -1
			}
			for _, m := range pkcs11Modules {
				if !filepath.IsAbs(m) {
					return fmt.Errorf("--pkcs11-module %s: give an absolute path", m)
				}
			}
			for i, d := range keyDirs {
				if opt.KeyDirs[i], err = filepath.Abs(d); err != nil {
					return err
				}
			}
			if opt.OpenStore, err = storeOpener(ctx, storeURL); err != nil {
				return fmt.Errorf("--store: %w", err)
			}
			srv, first, err := server.Open(ctx, opt)
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
	f.StringVar(&catalogURL, "catalog", "", "postgres:// URL of a PostgreSQL catalog several servers may share (default: $COFFER_CATALOG, else the SQLite file in --data)")
	f.StringVar(&deploymentKey, "deployment-key", "", "with --catalog: the deployment key file every server sharing the catalog is given (default DATA/keys/deployment.key, made by the first server)")
	f.StringVar(&storeURL, "store", "", "where the vaults' stores live: s3://BUCKET/PREFIX?endpoint=URL&region=R (default: under --data)")
	f.StringVar(&certFile, "tls-cert", "", "server certificate chain (PEM); default: a local CA's")
	f.StringVar(&keyFile, "tls-key", "", "server private key (PEM)")
	f.StringVar(&tlsMin, "tls-min", "1.2", "minimum TLS version: 1.2 or 1.3")
	f.StringArrayVar(&hosts, "host", nil, "extra DNS name or IP for the local CA's server certificate (repeatable)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&retentionAt, "retention-at", server.DefaultRetentionAt, "time of day (HH:MM, this machine's time zone) of the daily run that applies stored retention policies")
	durationFlag(f, &keyTTL, "key-ttl", server.DefaultKeyTTL, "how long a vault's unwrapped keys stay in memory before they are unwrapped again (0: while the vault is open)")
	durationFlag(f, &postureRPO, "posture-rpo", posture.DefaultRPO, "recovery point objective coffer posture holds every source to: its newest backup and source report must be younger")
	durationFlag(f, &postureCheck, "posture-check-age", posture.DefaultCheckMaxAge, "how old the newest full check --read-data may be before coffer posture warns")
	f.StringArrayVar(&pkcs11Modules, "pkcs11-module", nil, "a PKCS#11 module customer-key URIs may name (absolute path; repeatable)")
	f.StringArrayVar(&keyDirs, "key-dir", nil, "a directory customer-key URIs may read key and PIN files from (repeatable)")
	cmd.AddCommand(newApproverTokenCmd(a), newAssignApproverCmd(a))
	return cmd
}

func newApproverTokenCmd(a *app) *cobra.Command {
	var dataDir, name string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "approver-token",
		Short: "Issue a security-approver token (on the server machine only)",
		Long: `Issue a token with the security-approver role, which approves or rejects
multi-user authorization requests and does nothing else. It is written straight
into the server's catalog, so only someone with access to the server machine's
data directory can issue one: the API never does, so that an owner cannot
approve their own critical changes. Give it to the person who approves, not to
an owner. The token is printed once.`,
		Example: "  coffer server approver-token --data /var/lib/coffer --name alice --expires 2160h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" || name == "" {
				return errors.New("give the server's data directory with --data and the approver's name with --name")
			}
			var exp time.Time
			if expires > 0 {
				exp = a.now().Add(expires)
			}
			secret, id, err := server.IssueApproverToken(cmd.Context(), dataDir, name, exp, a.now())
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, secret)
			fmt.Fprintf(a.stderr, "security-approver token %s issued to %s; it is shown only this once\n", id, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "the server's data directory")
	cmd.Flags().StringVar(&name, "name", "", "who holds the token")
	cmd.Flags().DurationVar(&expires, "expires", 0, "expire after this long (default never)")
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
