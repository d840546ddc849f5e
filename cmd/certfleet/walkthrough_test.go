package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

// step is one command of the README's walk-through and the sample output
// the README shows under it.
type step struct {
	block   int    // which ```sh block, from 1
	command string // as written, continuation lines joined with "\\\n"
	sample  string // the sample output, "" when the README shows none
}

var (
	jsonKey    = regexp.MustCompile(`"([A-Za-z_][A-Za-z0-9_]*)"\s*:`)
	jsonString = regexp.MustCompile(`"([A-Za-z_][A-Za-z0-9_]*)"\s*:\s*"([^"]*)"`)
	jsonCount  = regexp.MustCompile(`"(page|per_page|total|total_pages)"\s*:\s*(-?[0-9]+)`)
	jsonError  = regexp.MustCompile(`"error"\s*:\s*"([^"]+)"`)
)

// countsOf returns the "key": number pairs in text of a page's counts,
// which a sample states exactly (its other numbers are examples).
func countsOf(text string) []string {
	var out []string
	for _, m := range jsonCount.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1]+"="+m[2])
	}
	return out
}

// stringsOf returns the "key": "value" pairs of string values in text
// whose value the README writes out in full (no "..." in it).
func stringsOf(text string) []string {
	var out []string
	for _, m := range jsonString.FindAllStringSubmatch(text, -1) {
		if m[1] == "..." || strings.Contains(m[2], "...") || strings.Contains(m[2], "…") {
			continue
		}
		out = append(out, m[1]+"="+m[2])
	}
	return out
}

// keysOf returns the JSON object keys named in text, sorted.
func keysOf(text string) []string {
	seen := map[string]bool{}
	for _, m := range jsonKey.FindAllStringSubmatch(text, -1) {
		seen[m[1]] = true
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// walkthrough returns the commands of the README's shell blocks, but for
// the set-up block (the two `go tool task` commands): a comment line that
// starts with "{" or "[" begins the sample output of the command before
// it, and comment lines indented further continue it; a ```json block right
// after a shell block is the sample of that block's last command.
func walkthrough(readme string) ([]step, error) {
	var (
		steps        []step
		block        int
		inSh, inJSON bool
		inSample     bool
		cmd          strings.Builder
		lastBlockEnd = -1 // index into steps of the last command of the block that just ended
		lineNo       int
	)
	flush := func() {
		if cmd.Len() > 0 {
			steps = append(steps, step{block: block, command: cmd.String()})
			cmd.Reset()
		}
	}
	sc := bufio.NewScanner(strings.NewReader(readme))
	var jsonSample strings.Builder
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		switch {
		case !inSh && !inJSON && line == "```sh":
			inSh, inSample = true, false
			block++
			lastBlockEnd = -1
			continue
		case !inSh && !inJSON && line == "```json" && lastBlockEnd >= 0:
			inJSON = true
			jsonSample.Reset()
			continue
		case inJSON && line == "```":
			inJSON = false
			steps[lastBlockEnd].sample += jsonSample.String()
			lastBlockEnd = -1
			continue
		case inJSON:
			jsonSample.WriteString(line + "\n")
			continue
		case inSh && line == "```":
			flush()
			inSh = false
			if len(steps) > 0 && steps[len(steps)-1].block == block {
				lastBlockEnd = len(steps) - 1
			}
			continue
		case !inSh:
			if strings.TrimSpace(line) != "" {
				lastBlockEnd = -1
			}
			continue
		}
		trimmed := strings.TrimSpace(line)
		if cmd.Len() > 0 { // continuing a command that ended with "\"
			cmd.WriteString("\n" + line)
			if !strings.HasSuffix(trimmed, "\\") {
				flush()
			}
			continue
		}
		switch {
		case trimmed == "":
			inSample = false
		case strings.HasPrefix(trimmed, "#"):
			text := strings.TrimPrefix(trimmed, "#")
			starts := strings.HasPrefix(strings.TrimSpace(text), "{") || strings.HasPrefix(strings.TrimSpace(text), "[")
			if starts && strings.HasPrefix(text, " ") && !strings.HasPrefix(text, "  ") {
				inSample = true
			} else if !(inSample && strings.HasPrefix(text, "  ")) {
				inSample = false
			}
			if inSample {
				if len(steps) == 0 || steps[len(steps)-1].block != block {
					return nil, fmt.Errorf("README line %d: a sample output with no command before it", lineNo)
				}
				steps[len(steps)-1].sample += text + "\n"
			}
		default:
			inSample = false
			cmd.WriteString(line)
			if !strings.HasSuffix(trimmed, "\\") {
				flush()
			}
		}
	}
	if inSh || inJSON {
		return nil, fmt.Errorf("README: a code block is not closed")
	}
	// The first shell block is the set-up commands, run by hand.
	var out []step
	for _, s := range steps {
		if !strings.Contains(s.command, "go tool task") {
			out = append(out, s)
		}
	}
	return out, nil
}

func TestWalkthroughParser(t *testing.T) {
	readme := "# x\n\n```sh\ngo tool task run\n```\n\ntext\n\n```sh\nA=1\n# 1. prose {not a sample}\ncurl -s \\\n  -d x $A\n# {\"status\":\"created\",\n#  \"user\":\"u\"}\n# prose again \"k\": 1\n\ncurl b\n```\n\n```json\n{\"domain\": \"d\"}\n```\n\n```sh\necho c\n```\n"
	got, err := walkthrough(readme)
	if err != nil {
		t.Fatal(err)
	}
	want := []step{
		{block: 2, command: "A=1"},
		{block: 2, command: "curl -s \\\n  -d x $A", sample: " {\"status\":\"created\",\n  \"user\":\"u\"}\n"},
		{block: 2, command: "curl b", sample: "{\"domain\": \"d\"}\n"},
		{block: 3, command: "echo c"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if k := keysOf(got[1].sample); fmt.Sprint(k) != "[status user]" {
		t.Errorf("keys: got %v, want [status user]", k)
	}
	if kv := stringsOf(`{"id":"6f1c...","status": "created","x":"…","...":"..."}`); fmt.Sprint(kv) != "[status=created]" {
		t.Errorf("strings: got %v, want [status=created]", kv)
	}
	if _, err := walkthrough("```sh\n# {\"a\":1}\n```\n"); err == nil {
		t.Error("a sample before any command: got no error")
	}
}

// TestReadmeWalkthrough runs every command of the README's walk-through as
// written, against the demo `go tool task run` starts (scripts/run.sh, with
// its data, Redis and ClickHouse of its own), and checks that each command
// succeeds and that its output has every field of the sample the README
// shows under it. It also stops the demo with SIGTERM and expects a clean
// exit.
func TestReadmeWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo")
	}
	for _, tool := range []string{"bash", "curl", "jq", "setsid", "od", "unzip", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (go tool task deps installs it): %v", tool, err)
		}
	}
	root := testenv.RepoRoot()
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := walkthrough(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) < 10 {
		t.Fatalf("found %d walk-through commands in the README, want at least 10", len(steps))
	}

	rs := testenv.Redis(t)
	ch := testenv.ClickHouse(t)
	work := t.TempDir()
	data := filepath.Join(work, ".data")
	if err := os.MkdirAll(filepath.Join(data, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(data, "bin", "certfleet"), "./cmd/certfleet")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	services := fmt.Sprintf("CERTFLEET_REDIS_URL=%s\nCERTFLEET_CLICKHOUSE_DSN=%s\n", rs.URL, ch.DSN)
	if err := os.WriteFile(filepath.Join(data, "services.env"), []byte(services), 0o600); err != nil {
		t.Fatal(err)
	}
	// The demo's ports are picked free, and another test may take one
	// before the demo binds it: a start that fails on a port in use is
	// tried again on others.
	var (
		listen, labPort string
		run             *exec.Cmd
		mu              sync.Mutex
		runOut          bytes.Buffer
		done            chan error
		stopped         bool
	)
	output := func() string { mu.Lock(); defer mu.Unlock(); return runOut.String() }
	for attempt := 1; ; attempt++ {
		listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		labPort = strconv.Itoa(testenv.FreePort(t))
		env := append(os.Environ(),
			"CERTFLEET_RUN_DATA="+data,
			"CERTFLEET_LISTEN="+listen,
			"CERTFLEET_LAB_PORT="+labPort,
			"CERTFLEET_REDIS_URL="+rs.URL,
			"CERTFLEET_CLICKHOUSE_DSN="+ch.DSN,
		)
		run = exec.Command("bash", filepath.Join(root, "scripts", "run.sh"))
		run.Env = env
		mu.Lock()
		runOut.Reset()
		mu.Unlock()
		run.Stdout = lockedWriter{&mu, &runOut}
		run.Stderr = run.Stdout
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		done = make(chan error, 1)
		go func(run *exec.Cmd, done chan error) { done <- run.Wait() }(run, done)
		stopped = false
		started, exited := false, error(nil)
		deadline := time.Now().Add(4 * time.Minute)
		for !started && exited == nil {
			if strings.Contains(output(), "certfleet is running") {
				started = true
				break
			}
			select {
			case err := <-done:
				stopped = true
				exited = err
				if exited == nil {
					exited = errors.New("exit status 0")
				}
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("the demo did not start within 4 minutes:\n%s", output())
			}
		}
		if started {
			break
		}
		if out := output(); attempt < 3 && (strings.Contains(out, "address already in use") || strings.Contains(out, "is taken by")) {
			t.Logf("the demo's start %d found a port taken; trying others:\n%s", attempt, output())
			continue
		}
		t.Fatalf("the demo exited during start (%v):\n%s", exited, output())
	}
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = run.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the demo stopped by SIGTERM: got %v, want exit status 0", err)
			}
		case <-time.After(90 * time.Second):
			_ = run.Process.Kill()
			t.Error("the demo did not stop within 90s of SIGTERM")
		}
	}
	defer stop()

	// One shell runs every command in order (variables carry over), each
	// command's output and status to its own files.
	outDir := filepath.Join(work, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("set -u\n")
	for i, s := range steps {
		c := strings.ReplaceAll(s.command, "127.0.0.1:8080", listen)
		c = strings.ReplaceAll(c, "9443", labPort)
		fmt.Fprintf(&script, "{\n%s\n} >%s/%d.out 2>&1\necho $? >%s/%d.rc\n", c, outDir, i, outDir, i)
	}
	sh := exec.Command("bash", "-c", script.String())
	sh.Dir = work
	sh.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + work, "LANG=C.UTF-8",
		// certfleet's CLI reaches the demo's servers, as it reaches the
		// default ports on a machine where `go tool task run` runs.
		"CERTFLEET_REDIS_URL=" + rs.URL, "CERTFLEET_CLICKHOUSE_DSN=" + ch.DSN,
	}
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the walk-through's shell failed: %v\n%s", err, out)
	}
	for i, s := range steps {
		rc, _ := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("%d.rc", i)))
		out, _ := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("%d.out", i)))
		if os.Getenv("CERTFLEET_WALKTHROUGH_SHOW") != "" {
			t.Logf("block %d: %s\n%s", s.block, s.command, out)
		}
		if strings.TrimSpace(string(rc)) != "0" {
			t.Errorf("block %d: %s\nexit status %s, output:\n%s", s.block, s.command, strings.TrimSpace(string(rc)), out)
			continue
		}
		var missing []string
		have := map[string]bool{}
		for _, k := range keysOf(string(out)) {
			have[k] = true
		}
		for _, k := range keysOf(s.sample) {
			if !have[k] {
				missing = append(missing, k)
			}
		}
		for _, kv := range append(stringsOf(string(out)), countsOf(string(out))...) {
			have[kv] = true
		}
		for _, kv := range append(stringsOf(strings.ReplaceAll(s.sample, "9443", labPort)), countsOf(s.sample)...) {
			if !have[kv] {
				missing = append(missing, kv)
			}
		}
		// An error the README does not show is a command that does not
		// work as written (curl -s exits 0 on a 4xx).
		if m := jsonError.FindStringSubmatch(string(out)); m != nil && !slices.Contains(keysOf(s.sample), "error") {
			t.Errorf("block %d: %s\nanswered an error the README does not show: %s\noutput:\n%s", s.block, s.command, m[1], out)
		}
		if len(missing) > 0 {
			t.Errorf("block %d: %s\noutput lacks %v of the README's sample\nsample:\n%s\noutput:\n%s", s.block, s.command, missing, s.sample, out)
		}
	}
	stop()
	if t.Failed() {
		t.Logf("the demo's output:\n%s", output())
		for _, f := range []string{"certfleet.log", "agent.log", "lab.log"} {
			if b, err := os.ReadFile(filepath.Join(data, "logs", f)); err == nil {
				t.Logf("%s (last 3000 bytes):\n%s", f, tail(b, 3000))
			}
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// lockedWriter serialises writes of the demo's stdout and stderr.
type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
