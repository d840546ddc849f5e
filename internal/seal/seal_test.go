package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testBox(t *testing.T, pass string) *Box {
	t.Helper()
	salt := bytes.Repeat([]byte{7}, SaltSize)
	key, err := KeyFromPassphrase(pass, salt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	b := testBox(t, "correct horse battery staple")
	secret := []byte("whsec_0123456789")
	sealed, err := b.Seal(secret, []byte("channel:1/secret"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "whsec") || !strings.HasPrefix(sealed, "v1.") {
		t.Fatalf("sealed value %q shows the secret or lacks the version", sealed)
	}
	again, _ := b.Seal(secret, []byte("channel:1/secret"))
	if again == sealed {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
	got, err := b.Open(sealed, []byte("channel:1/secret"))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: got %q, %v, want %q", got, err, secret)
	}

	other := testBox(t, "another passphrase entirely")
	tampered := sealed[:len(sealed)-2] + "AA"
	for name, open := range map[string]func() ([]byte, error){
		"other place":      func() ([]byte, error) { return b.Open(sealed, []byte("channel:2/secret")) },
		"other passphrase": func() ([]byte, error) { return other.Open(sealed, []byte("channel:1/secret")) },
		"tampered":         func() ([]byte, error) { return b.Open(tampered, []byte("channel:1/secret")) },
		"truncated":        func() ([]byte, error) { return b.Open(sealed[:10], []byte("channel:1/secret")) },
		"not sealed":       func() ([]byte, error) { return b.Open("whsec_0123456789", nil) },
	} {
		if got, err := open(); !errors.Is(err, ErrOpen) || got != nil {
			t.Errorf("%s: got %q, %v, want ErrOpen", name, got, err)
		}
	}
}

func TestKeyFromPassphraseChecks(t *testing.T) {
	if _, err := KeyFromPassphrase("short", bytes.Repeat([]byte{1}, SaltSize)); err == nil {
		t.Error("short passphrase accepted")
	}
	if _, err := KeyFromPassphrase("long enough passphrase", []byte{1}); err == nil {
		t.Error("short salt accepted")
	}
	if _, err := New(make([]byte, 16)); err == nil {
		t.Error("16-byte key accepted")
	}
	s1, _ := NewSalt()
	s2, _ := NewSalt()
	if bytes.Equal(s1, s2) || len(s1) != SaltSize {
		t.Errorf("salts: got %x and %x, want two different %d-byte salts", s1, s2, SaltSize)
	}
}

func TestReadPassphraseFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(good, []byte("a long enough passphrase\r\nignored"), 0o600)
	_ = os.WriteFile(short, []byte("short\n"), 0o600)
	if p, err := ReadPassphraseFile(good); err != nil || p != "a long enough passphrase" {
		t.Errorf("read passphrase file: got %q %v, want the first line", p, err)
	}
	if _, err := ReadPassphraseFile(short); err == nil {
		t.Error("short passphrase file: got no error")
	}
	if _, err := ReadPassphraseFile(filepath.Join(dir, "none")); err == nil {
		t.Error("missing passphrase file: got no error")
	}
}
