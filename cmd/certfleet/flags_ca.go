package main

import (
	"time"

	"github.com/certfleet/certfleet/apiserver/clientcerts"
)

// caOptions are the private CA's flags.
type caOptions struct {
	CAPassphrase     string
	CAPassphraseFile string
	CAInit           bool
	CAKeyType        string
	CACommonName     string
	PublicURL        string
	CRLValidity      time.Duration

	// ca import
	CACertFile string
	CAKeyFile  string
}

// caPassphrase registers the flags giving the CA passphrase: the apiserver's
// and the `certfleet ca` tool's.
func (f *flagSet) caPassphrase() *flagSet {
	defer f.group("client-certificate CA")()
	f.StringVar(&f.opts.CAPassphrase, "ca-passphrase", "", "passphrase sealing the client CA key and generated client keys, at least 12 characters (prefer the environment CERTFLEET_CA_PASSPHRASE or --ca-passphrase-file)")
	f.StringVar(&f.opts.CAPassphraseFile, "ca-passphrase-file", "", "file whose first line is the CA passphrase")
	return f
}

// ca registers the private CA's flags.
func (f *flagSet) ca() *flagSet {
	defer f.group("client-certificate CA")()
	f.caPassphrase()
	f.BoolVar(&f.opts.CAInit, "ca-init", true, "create the client CA at start when there is none (needs the CA passphrase)")
	f.StringVar(&f.opts.CAKeyType, "ca-key-type", "ecdsa-p256", "key type of a CA --ca-init creates: ecdsa-p256 or rsa-3072")
	f.StringVar(&f.opts.CACommonName, "ca-common-name", "certfleet client CA", "subject common name of a CA --ca-init creates")
	f.StringVar(&f.opts.PublicURL, "public-url", "", "base URL relying parties reach this API at, named in issued certificates' CRL and OCSP links (default http://<listen>)")
	f.DurationVar(&f.opts.CRLValidity, "crl-validity", 24*time.Hour, "time from a CRL's thisUpdate to its nextUpdate")
	return f
}

// caConfig is the apiserver's CA settings.
func (o *options) caConfig() clientcerts.Config {
	return clientcerts.Config{
		Passphrase: o.CAPassphrase, PassphraseFile: o.CAPassphraseFile, Init: o.CAInit,
		KeyType: o.CAKeyType, CommonName: o.CACommonName, PublicURL: o.PublicURL, CRLValidity: o.CRLValidity,
	}
}
