// Package seal encrypts secrets certfleet must be able to read back (a
// webhook's signing secret, the CA's private key, generated client keys)
// before they are stored: AES-256-GCM with a key derived from an operator's
// passphrase with scrypt. Secrets that only need checking (API keys) are
// hashed instead and never come here.
//
// A sealed value is "v1." + base64url(nonce || ciphertext). The additional
// data binds a value to its place (say, the record id and field name), so a
// sealed value copied to another record does not open there.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/scrypt"
)

const (
	prefix = "v1."
	// KeySize is the size of a Box's key.
	KeySize = 32
	// SaltSize is the size of a salt for KeyFromPassphrase.
	SaltSize = 16
	// MinPassphrase is the shortest passphrase accepted.
	MinPassphrase = 12
)

// scrypt cost: N=2^15, r=8, p=1 (the parameters RFC 7914 and x/crypto
// recommend for interactive use): about 32 MiB and 50-100 ms, once per
// process and salt.
const scryptN, scryptR, scryptP = 1 << 15, 8, 1

// ErrOpen is returned for a value that does not open with the key and
// additional data given: tampered, truncated, from another place, or sealed
// with another key.
var ErrOpen = errors.New("sealed value does not open with this key")

// NewSalt returns a random salt for KeyFromPassphrase.
func NewSalt() ([]byte, error) {
	salt := make([]byte, SaltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("new salt: %w", err)
	}
	return salt, nil
}

// KeyFromPassphrase derives a Box key from an operator's passphrase and a
// salt stored beside the values it seals.
func KeyFromPassphrase(passphrase string, salt []byte) ([]byte, error) {
	if len(passphrase) < MinPassphrase {
		return nil, fmt.Errorf("passphrase must be at least %d characters", MinPassphrase)
	}
	if len(salt) < SaltSize {
		return nil, fmt.Errorf("salt must be at least %d bytes", SaltSize)
	}
	key, err := scrypt.Key([]byte(passphrase), salt, scryptN, scryptR, scryptP, KeySize)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	return key, nil
}

// Box seals and opens values with one key. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for a KeySize-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext bound to aad.
func (b *Box) Seal(plaintext, aad []byte) (string, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	out := b.aead.Seal(nonce, nonce, plaintext, aad)
	return prefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open decrypts a value Seal returned for the same aad, or returns ErrOpen.
func (b *Box) Open(sealed string, aad []byte) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return nil, fmt.Errorf("%w: not a v1 sealed value", ErrOpen)
	}
	// Strict: a value has one spelling. Without it the unused low bits of
	// the last character are ignored, and up to 16 strings open to one
	// value (a token compared or counted by its text would be fooled).
	raw, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil || len(raw) < b.aead.NonceSize()+b.aead.Overhead() {
		return nil, fmt.Errorf("%w: malformed", ErrOpen)
	}
	n := b.aead.NonceSize()
	plain, err := b.aead.Open(nil, raw[:n], raw[n:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// ReadPassphraseFile reads a passphrase from a file (a --...-passphrase-file
// flag): its first line without the line ending, at least MinPassphrase
// characters.
func ReadPassphraseFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read passphrase file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if len(line) < MinPassphrase {
		return "", fmt.Errorf("passphrase in %s must be at least %d characters", path, MinPassphrase)
	}
	return line, nil
}

// CheckPassphrase refuses a passphrase shorter than MinPassphrase; what
// names it in the error ("secrets", "CA"). Empty passes: no passphrase
// means the feature it seals for is off, which callers check themselves.
func CheckPassphrase(what, passphrase string) error {
	if passphrase != "" && len(passphrase) < MinPassphrase {
		return fmt.Errorf("%s passphrase must be at least %d characters", what, MinPassphrase)
	}
	return nil
}
