package printable

import (
	"testing"
	"unicode/utf8"
)

func TestChecks(t *testing.T) {
	tests := []struct {
		name            string
		s               string
		control, inText bool
	}{
		{"plain", "ops key é ✓", false, false},
		{"empty", "", false, false},
		{"NUL", "a\x00b", true, true},
		{"ESC", "\x1b[2J", true, true},
		{"BEL", "x\a", true, true},
		{"DEL", "x\x7f", true, true},
		{"C1 CSI", "x\u009b2J", true, true},
		{"right-to-left override", "invoice\u202egpj.exe", true, true},
		{"isolate", "a\u2066b", true, true},
		{"line feed", "two\nlines", true, false},
		{"tab", "a\tb", true, false},
		{"carriage return", "a\rb", true, true},
		{"next to C1 (U+00A0)", "a\u00a0b", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HasControl(tc.s); got != tc.control {
				t.Errorf("HasControl(%q): got %v, want %v", tc.s, got, tc.control)
			}
			if got := HasControlInText(tc.s); got != tc.inText {
				t.Errorf("HasControlInText(%q): got %v, want %v", tc.s, got, tc.inText)
			}
		})
	}
}

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ops", "ops"},
		{"é ✓", "é ✓"},
		{"x\x1b]0;pwned\a\x1b[2J\nfake: row", `x\x1b]0;pwned\x07\x1b[2J\nfake: row`},
		{"a\tb\rc\x00\x7f", `a\tb\rc\x00\x7f`},
		{"\u009b31m", `\u009b31m`},
		{"row\u202eexe", `row\u202eexe`},
		{"bad \xff utf-8", `bad \xff utf-8`},
		{"\ufffd stays", "\ufffd stays"},
	}
	for _, tc := range tests {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzEscape: the escaped text has no control character, is valid UTF-8,
// and is the text itself when that had nothing to escape.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "ops", "x\x1b]0;pwned\a\x1b[2J\nfake: row", "\x00", "\u009b", "\xff\xfe", "a\tb\r\n", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if HasControl(got) || !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q: holds a control character or is not UTF-8", s, got)
		}
		if !HasControl(s) && utf8.ValidString(s) && got != s {
			t.Fatalf("Escape(%q) = %q: changed text with nothing to escape", s, got)
		}
		if len(got) < len(s) {
			t.Fatalf("Escape(%q) = %q: shorter than the text", s, got)
		}
	})
}
