package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the repository, two directories up from this package.
const repoRoot = "../.."

var (
	quoted   = regexp.MustCompile(`"([^"]*)"`)
	flagName = regexp.MustCompile(`"--([a-z0-9-]+)"`)
	// A variable set for a role: "- name: CERTFLEET_X" (chart) or
	// "CERTFLEET_X: value" (compose); not a ${CERTFLEET_X} compose reads.
	envVar = regexp.MustCompile(`(?m)(?:name: (CERTFLEET_[A-Z0-9_]+)$|^\s+(CERTFLEET_[A-Z0-9_]+):)`)
)

// commandLists returns each [...] list that follows marker in text (a
// compose command: or a chart's args:), as text.
func commandLists(text, marker string) []string {
	var out []string
	for {
		i := strings.Index(text, marker)
		if i < 0 {
			return out
		}
		text = text[i+len(marker):]
		j := strings.IndexByte(text, ']')
		if j < 0 {
			return out
		}
		out = append(out, text[:j])
		text = text[j:]
	}
}

// roleHas tells whether `certfleet <role>` has the flag.
func roleHas(role, name string) bool {
	return roleFlags(role).Lookup(name) != nil
}

// TestDeployFlagsExist: every flag and CERTFLEET_* variable the compose
// file and the Helm chart pass to a role is one `certfleet <role> -h`
// lists, so a renamed flag cannot leave a deployment that no longer starts.
func TestDeployFlagsExist(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "deploy/helm/certfleet/templates/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("chart templates: %v %v", files, err)
	}
	files = append(files, filepath.Join(repoRoot, "deploy/compose.yaml"))
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		lists := append(commandLists(text, "command: ["), commandLists(text, "args: [")...)
		roles := map[string]bool{}
		for _, l := range lists {
			q := quoted.FindStringSubmatch(l)
			if q == nil {
				continue
			}
			role := q[1]
			if role != "apiserver" && role != "coordinator" && role != "agent" && role != "all" {
				continue // redis-server, clickhouse
			}
			roles[role] = true
			for _, m := range flagName.FindAllStringSubmatch(l, -1) {
				checked++
				if !roleHas(role, m[1]) {
					t.Errorf("%s: certfleet %s has no flag --%s", filepath.Base(f), role, m[1])
				}
			}
		}
		// Variables set in a file apply to the roles it runs (the helpers
		// file's to every role).
		if strings.HasSuffix(f, "_helpers.tpl") {
			roles = map[string]bool{"apiserver": true, "coordinator": true, "agent": true}
		}
		for _, m := range envVar.FindAllStringSubmatch(text, -1) {
			v := m[1] + m[2]
			name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "CERTFLEET_")), "_", "-")
			for role := range roles {
				checked++
				if !roleHas(role, name) {
					t.Errorf("%s: certfleet %s has no flag --%s for %s", filepath.Base(f), role, name, v)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d flags, want the deployment files' (at least 20): is the parsing broken?", checked)
	}
}

// TestHelmChart lints and renders the chart with helm (v4, from the tools
// module): one Deployment per role and region, probes on /healthz and
// /readyz with a timeout above the 2 s the endpoints answer within and no
// startupProbe (every role's port answers /healthz while it starts), a
// ServiceMonitor when asked.
func TestHelmChart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds helm")
	}
	chart := filepath.Join(repoRoot, "deploy/helm/certfleet")
	helm := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", append([]string{"tool", "helm"}, args...)...)
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	chart, _ = filepath.Rel(repoRoot, chart)
	helm("lint", "--strict", chart)
	out := helm("template", "demo", chart, "--set", "serviceMonitor.enabled=true")
	for kind, want := range map[string]int{"kind: Deployment": 4, "kind: Service\n": 4, "kind: ServiceMonitor": 1,
		"path: /healthz": 4, "path: /readyz": 4, "timeoutSeconds: 3": 8, "startupProbe": 0,
		"CERTFLEET_EXPIRY_METRICS_TOKEN_FILE": 0, "authorization:": 0} {
		if got := strings.Count(out, kind); got != want {
			t.Errorf("rendered chart: %d of %q, want %d", got, kind, want)
		}
	}
	// With an expiry metrics token, the API server reads it from the
	// Secret and the ServiceMonitor sends it on the API server's scrape.
	out = helm("template", "demo", chart, "--set", "serviceMonitor.enabled=true", "--set", "expiryMetrics.tokenKey=metrics-token")
	for kind, want := range map[string]int{"CERTFLEET_EXPIRY_METRICS_TOKEN_FILE": 1, "authorization:": 1,
		"key: metrics-token": 2, "mountPath: /etc/certfleet/expiry-metrics": 1} {
		if got := strings.Count(out, kind); got != want {
			t.Errorf("chart with a token: %d of %q, want %d", got, kind, want)
		}
	}
}

// TestStaticBinary builds the binary as deploy/Dockerfile does and checks
// it needs no dynamic loader (the distroless static image has none).
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "CGO_ENABLED=0 GOWORK=off go build -trimpath") {
		t.Fatal("deploy/Dockerfile no longer builds with CGO_ENABLED=0 -trimpath: update this test with it")
	}
	bin := filepath.Join(t.TempDir(), "certfleet")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/certfleet")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary asks for a dynamic loader; the distroless static image has none")
		}
	}
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "certfleet ") {
		t.Fatalf("certfleet version: %v %s", err, out)
	}
}

// TestAlertRules checks deploy/prometheus/alerts.yml with promtool (check
// and its unit tests) and that every certfleet_* metric it or the Grafana
// dashboard names is one certfleet declares.
func TestAlertRules(t *testing.T) {
	rules := filepath.Join(repoRoot, "deploy/prometheus/alerts.yml")
	declared := declaredMetrics(t)
	for _, f := range []string{rules, filepath.Join(repoRoot, "deploy/grafana/certfleet.json")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		named := regexp.MustCompile(`\bcertfleet_[a-z0-9_]+`).FindAllString(string(b), -1)
		if len(named) < 5 {
			t.Fatalf("%s names %d certfleet metrics: is the pattern broken?", filepath.Base(f), len(named))
		}
		for _, m := range named {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
			if !declared[m] && !declared[base] {
				t.Errorf("%s names %s, which certfleet does not export", filepath.Base(f), m)
			}
		}
	}
	if testing.Short() {
		return
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: scripts/deps.sh installs it (Debian's prometheus package)")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// declaredMetrics returns the certfleet_* names in the Go sources' string
// literals: every metric certfleet registers is named so.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	lit := regexp.MustCompile(`"(certfleet_[a-z0-9_]+)"`)
	err := filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".data" || d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDiskCheck runs scripts/diskcheck.sh, which `go tool task test` and
// .ci/run call before the suite, against a disk too small and one large
// enough (by its thresholds), and checks both callers still call it.
func TestDiskCheck(t *testing.T) {
	run := func(env ...string) (int, string) {
		cmd := exec.Command("bash", "scripts/diskcheck.sh")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	if code, out := run("CERTFLEET_TEST_DISK_MIN_GB=0", "CERTFLEET_TEST_DISK_GB=0"); code != 0 || out != "" {
		t.Errorf("room enough: exit %d, %q; want 0 and nothing said", code, out)
	}
	if code, out := run("CERTFLEET_TEST_DISK_MIN_GB=0", "CERTFLEET_TEST_DISK_GB=1000000"); code != 0 || !strings.Contains(out, "warning:") {
		t.Errorf("short of a cold run's room: exit %d, %q; want 0 and a warning", code, out)
	}
	if code, out := run("CERTFLEET_TEST_DISK_MIN_GB=1000000"); code != 1 || !strings.Contains(out, "needs at least 1000000 GB") {
		t.Errorf("short of the minimum: exit %d, %q; want 1 and what is needed", code, out)
	}
	for file, call := range map[string]string{
		"Taskfile.yml": "- bash scripts/diskcheck.sh\n",
		".ci/run":      "bash scripts/diskcheck.sh --clean-cache\ngo tool task test\n",
	} {
		b, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), call) {
			t.Errorf("%s no longer runs %q", file, call)
		}
	}
}
