package lab

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BootstrapFile is the name of the RDAP bootstrap file WriteEnv writes
// beside the roots.
const BootstrapFile = "lab-rdap-bootstrap.json"

// WriteEnv writes the lab's roots to rootsPath, its RDAP bootstrap file
// beside them (BootstrapFile) and, at path, the settings an agent needs as
// shell-sourceable CERTFLEET_* lines, followed by CERTFLEET_LAB_DOMAINS with
// every target's domain. The env file appears complete or not at all, so a
// script may wait for it to exist.
func (l *Lab) WriteEnv(path, rootsPath string) error {
	if err := writeAtomic(rootsPath, l.RootsPEM()); err != nil {
		return err
	}
	bootstrapPath := filepath.Join(filepath.Dir(rootsPath), BootstrapFile)
	if err := writeAtomic(bootstrapPath, l.Bootstrap()); err != nil {
		return err
	}
	domains := make([]string, 0, len(l.targets))
	for _, t := range l.targets {
		domains = append(domains, t.Domain)
	}
	var b bytes.Buffer
	vars := [][2]string{
		{"CERTFLEET_RESOLVER", l.resolver},
		{"CERTFLEET_EXTRA_ROOTS", rootsPath},
		{"CERTFLEET_ALLOW_TARGETS", strings.Join(l.AllowTargets(), ",")},
		{"CERTFLEET_RDAP_BOOTSTRAP", bootstrapPath},
		{"CERTFLEET_WHOIS_SERVER", strings.Join(l.WHOISServers(), ",")},
	}
	if dir := l.ACMEDirectory(); dir != "" {
		// The coordinator's ACME worker and the API's DNS accounts; the
		// LAB_ lines are the DNS account a tenant saves to order
		// certificates for lab names.
		c := l.RFC2136Credentials()
		vars = append(vars, [][2]string{
			{"CERTFLEET_ACME_DIRECTORY", dir},
			{"CERTFLEET_ACME_CA_ROOTS", rootsPath},
			{"CERTFLEET_ACME_DNS_RESOLVERS", l.resolver},
			{"CERTFLEET_ALLOW_DNS_TARGETS", strings.Join(l.AllowTargets(), ",")},
			{"CERTFLEET_LAB_RFC2136_NAMESERVER", c["RFC2136_NAMESERVER"]},
			{"CERTFLEET_LAB_RFC2136_TSIG_KEY", c["RFC2136_TSIG_KEY"]},
			{"CERTFLEET_LAB_RFC2136_TSIG_SECRET", c["RFC2136_TSIG_SECRET"]},
			{"CERTFLEET_LAB_RFC2136_TSIG_ALGORITHM", c["RFC2136_TSIG_ALGORITHM"]},
			{"CERTFLEET_LAB_ACME_DOMAIN", "shop." + strings.TrimSuffix(l.cfg.Zone, ".")},
		}...)
	}
	// CERTFLEET_LAB_DOMAINS comes last: scripts wait for it.
	vars = append(vars, [2]string{"CERTFLEET_LAB_DOMAINS", strings.Join(domains, " ")})
	for _, kv := range vars {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return writeAtomic(path, b.Bytes())
}

// shellQuote leaves plain words alone and single-quotes the rest.
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:,@%+", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeAtomic writes through a temporary file in the same directory and a
// rename, so readers never see half a file.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
