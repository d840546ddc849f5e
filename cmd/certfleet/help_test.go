package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestSubcommandHelp: `certfleet <command> -h` exits 0 and shows the
// command's usage, its flags in titled groups each beside its CERTFLEET_*
// variable, and examples naming only flags the command has; a command
// with actions lists its actions and their examples. Every command of the
// top-level usage is checked, so a new one cannot come without help.
func TestSubcommandHelp(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^  --([a-z0-9-]+)  (\S+)$`)
	heading := regexp.MustCompile(`(?m)^(?:[a-zA-Z -]+ )?flags:$`)
	exampleFlag := regexp.MustCompile(`(?:^|\s)--([a-z0-9-]+)`)
	help := func(t *testing.T, cmd string) string {
		t.Helper()
		var out strings.Builder
		code := runMain(t.Context(), append(strings.Fields(cmd), "--help"), &out, &out)
		if code != 0 {
			t.Fatalf("got exit %d, want 0:\n%s", code, out.String())
		}
		text := out.String()
		if !strings.HasPrefix(text, "usage: certfleet "+cmd) {
			t.Errorf("got first line %q, want the usage of certfleet %s", strings.SplitN(text, "\n", 2)[0], cmd)
		}
		_, examples, ok := strings.Cut(text, "\nexamples:\n")
		if !ok || !strings.Contains(examples, "certfleet "+cmd) {
			t.Errorf("got no example of certfleet %s:\n%s", cmd, text)
		}
		return text
	}

	// The top-level usage's commands: "  name  what it does" lines.
	top := regexp.MustCompile(`(?m)^  ([a-z]+) `).FindAllStringSubmatch(usage, -1)
	if len(top) < 12 {
		t.Fatalf("found %d commands in the usage, want every one (at least 12): is the pattern broken?", len(top))
	}
	for _, m := range top {
		cmd := m[1]
		t.Run(cmd, func(t *testing.T) {
			text := help(t, cmd)
			_, withFlags := commandHelp[cmd]
			if withFlags && cmd != "version" && len(heading.FindAllString(text, -1)) < 2 {
				t.Errorf("got %d groups of flags, want the command's and the general ones:\n%s", len(heading.FindAllString(text, -1)), text)
			}
			if !withFlags && !strings.Contains(text, "certfleet "+cmd+" <action> -h") {
				t.Errorf("a command with actions should say how to get an action's flags:\n%s", text)
			}
		})
	}
	for cmd := range commandHelp {
		if cmd == "version" {
			continue // no flags
		}
		t.Run(cmd, func(t *testing.T) {
			text := help(t, cmd)
			listed := map[string]bool{}
			for _, m := range flagLine.FindAllStringSubmatch(text, -1) {
				listed[m[1]] = true
				if m[2] != envName(m[1]) {
					t.Errorf("--%s: got variable %s, want %s", m[1], m[2], envName(m[1]))
				}
			}
			if !listed["log-level"] || !listed["config"] {
				t.Errorf("got flags %v, want the general ones too", listed)
			}
			_, examples, _ := strings.Cut(text, "\nexamples:\n")
			for _, m := range exampleFlag.FindAllStringSubmatch(examples, -1) {
				if !listed[m[1]] {
					t.Errorf("an example passes --%s, which certfleet %s does not have", m[1], cmd)
				}
			}
		})
	}
}
