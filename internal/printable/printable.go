// Package printable keeps control characters out of the text users give
// (labels, names, tags, notes) and out of the terminal when such text is
// shown: one check that every validator calls, and one escape for output
// that may hold text stored before the check existed.
package printable

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// IsControl reports a control character: C0 (U+0000-U+001F), DEL and C1
// (U+0080-U+009F), and the bidirectional controls (U+202E and the other
// embeddings, overrides, isolates and marks). Each can drive a terminal
// (ESC and the 8-bit CSI U+009B start escape sequences, CR and LF forge
// lines, BEL rings), cut a string short in C code (NUL) or show text in
// another order than it holds ("Trojan Source"), and none belongs in a
// name.
func IsControl(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) }

// HasControl reports whether s holds a control character (IsControl): the
// check of a one-line value (a label, a name, a tag).
func HasControl(s string) bool { return strings.ContainsFunc(s, IsControl) }

// HasControlInText is HasControl for multi-line free text (notes): line
// feed and tab are text there, every other control character is not (CR
// included, which returns the cursor to overwrite a line).
func HasControlInText(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r != '\n' && r != '\t' && IsControl(r) })
}

// Escape returns s with every control character written as a Go escape
// (\n, \t, \r, \x1b, \u009b) and every byte that is not UTF-8 as \xNN, so
// that text shown in a terminal stays one line of itself: what was
// stored before the checks existed (or came from elsewhere, such as a
// certificate's issuer) cannot move the cursor, recolour or forge a row.
// Text without either is returned as it is.
func Escape(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == utf8.RuneError || IsControl(r) }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80 && IsControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
