package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/internal/seal"
)

const caUsage = "usage: certfleet ca init [--key-type ecdsa-p256|rsa-3072] [--common-name CN]\n" +
	"       certfleet ca import --cert FILE --key FILE\n" +
	"       certfleet ca show\n" +
	"init and import need the CA passphrase: CERTFLEET_CA_PASSPHRASE or --ca-passphrase-file"

// runCA is `certfleet ca init|import|show`: the operator's way to create
// the deployment's client CA (or bring their own) before starting the
// apiservers, and to see which CA they use. It writes to Redis through the
// same store as the apiserver, ca.created event included.
func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "init" && args[0] != "import" && args[0] != "show") {
		return actionUsage(stderr, "ca", caUsage, args)
	}
	action := args[0]
	fs := newFlagSet("ca " + action).redis()
	if action != "show" {
		fs.caPassphrase()
	}
	switch action {
	case "init":
		fs.StringVar(&fs.opts.CAKeyType, "key-type", clientca.KeyECDSAP256, "key type of the CA: ecdsa-p256 or rsa-3072")
		fs.StringVar(&fs.opts.CACommonName, "common-name", "certfleet client CA", "subject common name of the CA")
	case "import":
		fs.StringVar(&fs.opts.CACertFile, "cert", "", "PEM file of the CA certificate (required)")
		fs.StringVar(&fs.opts.CAKeyFile, "key", "", "PEM file of the CA's unencrypted private key: PKCS #8, SEC 1 or PKCS #1 (required)")
	}
	logger, err := fs.parse(args[1:], stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	o := fs.opts
	pass := o.CAPassphrase
	if o.CAPassphraseFile != "" {
		if pass != "" {
			return errors.New("give --ca-passphrase or --ca-passphrase-file, not both")
		}
		if pass, err = seal.ReadPassphraseFile(o.CAPassphraseFile); err != nil {
			return err
		}
	}
	if action != "show" && pass == "" {
		return errors.New("the CA passphrase is required: set CERTFLEET_CA_PASSPHRASE or --ca-passphrase-file (every apiserver needs the same one)")
	}
	var certPEM, keyPEM []byte
	if action == "import" {
		if o.CACertFile == "" || o.CAKeyFile == "" {
			return errors.New("--cert and --key are required")
		}
		if certPEM, err = os.ReadFile(o.CACertFile); err != nil {
			return fmt.Errorf("--cert: %w", err)
		}
		if keyPEM, err = os.ReadFile(o.CAKeyFile); err != nil {
			return fmt.Errorf("--key: %w", err)
		}
	}

	rdb, err := openRedis(ctx, o, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// The public URL only goes into client certificates, which this tool
	// does not issue.
	store, err := clientca.New(clientca.Config{Passphrase: pass, PublicURL: "http://unused", CommonName: o.CACommonName,
		Wait: o.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	switch action {
	case "init":
		if _, err := store.Init(ctx, o.CAKeyType); err != nil {
			if errors.Is(err, clientca.ErrCAExists) {
				return errors.New("a client CA exists already: see `certfleet ca show`")
			}
			return err
		}
	case "import":
		if _, err := store.Import(ctx, certPEM, keyPEM); err != nil {
			if errors.Is(err, clientca.ErrCAExists) {
				return errors.New("a client CA exists already: see `certfleet ca show`; an existing CA is never replaced")
			}
			return err
		}
	}
	info, err := store.Info(ctx)
	if errors.Is(err, clientca.ErrNoCA) {
		return errors.New("no client CA yet: run `certfleet ca init` or `certfleet ca import`, or start the apiserver with --ca-init")
	}
	if err != nil {
		return err
	}
	printCA(stdout, info)
	return nil
}

// printCA writes the CA's facts, then its certificate in PEM.
func printCA(w io.Writer, info clientca.CAInfo) {
	c := info.Cert
	fmt.Fprintf(w, "subject:     %s\n", c.Subject)
	fmt.Fprintf(w, "key type:    %s\n", info.KeyType)
	fmt.Fprintf(w, "source:      %s\n", info.Source)
	fmt.Fprintf(w, "serial:      %s\n", c.SerialNumber)
	fmt.Fprintf(w, "not before:  %s\n", c.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "not after:   %s\n", c.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "sha256:      %s\n", info.SHA256)
	fmt.Fprintf(w, "created at:  %s\n", info.CreatedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "%s", info.PEM)
}
