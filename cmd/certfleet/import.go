package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/certfleet/certfleet/apiserver/v1"
)

// importOptions are the flags of certfleet import.
type importOptions struct {
	API     string
	APIKey  string
	Chunk   int
	Resume  string
	Format  string
	Retries int
}

// importRecord is one domain of the file: the JSON object POST
// /api/v1/domains takes, and the line it starts on.
type importRecord struct {
	line int
	obj  json.RawMessage
}

// importState is the --resume file: the last line of FILE whose domain
// the server acknowledged. A re-run skips up to it; a chunk sent again
// after a crash between its answer and the state's write is harmless,
// since the bulk add answers exists for what it has.
type importState struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

// errImportItems is an import that ran to the end with items refused: exit 1.
var errImportItems = errors.New("some domains were not imported; see the lines above")

// runImport is `certfleet import FILE`: the domains of a CSV or NDJSON
// file posted in chunks to POST /api/v1/domains/bulk of a running server.
func runImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("import")
	fs.args = true
	o := &fs.opts.importOptions
	fs.StringVar(&o.API, "api", "http://127.0.0.1:8080", "base URL of the API server")
	fs.StringVar(&o.APIKey, "api-key", "", "v1 API key with the write permission (required)")
	fs.IntVar(&o.Chunk, "chunk", 1000, fmt.Sprintf("domains per request, 1 to %d", v1.MaxBulkItems))
	fs.StringVar(&o.Resume, "resume", "", "state file recording the last line the server acknowledged: a re-run continues after it")
	fs.StringVar(&o.Format, "format", "auto", "csv, ndjson, or auto (csv for a .csv file, else ndjson)")
	fs.IntVar(&o.Retries, "retries", 5, "attempts per chunk when the server is unavailable or answers 429/5xx")
	logger, err := fs.parse(args, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	if fs.NArg() != 1 {
		return usagef("name one FILE to import, e.g. certfleet import domains.csv")
	}
	if o.APIKey == "" {
		return usagef("--api-key (or CERTFLEET_API_KEY) is required")
	}
	if o.Chunk < 1 || o.Chunk > v1.MaxBulkItems {
		return usagef("--chunk must be from 1 to %d, got %d", v1.MaxBulkItems, o.Chunk)
	}
	if o.Retries < 1 {
		return usagef("--retries must be at least 1, got %d", o.Retries)
	}
	path := fs.Arg(0)
	format := o.Format
	if format == "auto" {
		format = "ndjson"
		if strings.EqualFold(filepath.Ext(path), ".csv") {
			format = "csv"
		}
	}
	var read func(io.Reader, func(importRecord) error) error
	switch format {
	case "csv":
		read = readCSV
	case "ndjson":
		read = readNDJSON
	default:
		return usagef("--format must be csv, ndjson or auto, got %q", o.Format)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	state := importState{File: abs}
	if o.Resume != "" {
		if state, err = loadImportState(o.Resume, abs); err != nil {
			return err
		}
		if state.Line > 0 {
			fmt.Fprintf(stderr, "resuming %s after line %d\n", path, state.Line)
		}
	}
	total, err := countLines(path)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	imp := &importer{opts: *o, stderr: stderr, state: state, total: total, start: time.Now(),
		client: &http.Client{Timeout: 5 * time.Minute}}
	var chunk []importRecord
	err = read(skipBOM(f), func(r importRecord) error {
		if r.line <= state.Line {
			return nil
		}
		chunk = append(chunk, r)
		if len(chunk) < o.Chunk {
			return nil
		}
		err := imp.send(ctx, chunk)
		chunk = chunk[:0]
		return err
	})
	if err == nil && len(chunk) > 0 {
		err = imp.send(ctx, chunk)
	}
	if err != nil {
		return fmt.Errorf("%w (acknowledged up to line %d%s)", err, imp.state.Line, resumeHint(o.Resume))
	}
	fmt.Fprintf(stdout, "imported %s: %d created, %d already monitored, %d refused\n", path, imp.created, imp.exists, imp.errors)
	if imp.errors > 0 {
		return errImportItems
	}
	return nil
}

func resumeHint(resume string) string {
	if resume == "" {
		return "; run with --resume STATEFILE to continue after an interruption"
	}
	return "; run the same command again to continue"
}

// importer posts chunks and keeps the tally and the resume state.
type importer struct {
	opts                    importOptions
	stderr                  io.Writer
	client                  *http.Client
	state                   importState
	total                   int
	start                   time.Time
	sent                    int
	created, exists, errors int
}

// bulkAnswer is the part of POST /domains/bulk's answer the CLI reads.
type bulkAnswer struct {
	Created, Exists, Errors int
	Results                 []struct {
		Index    int    `json:"index"`
		Status   string `json:"status"`
		Hostname string `json:"hostname"`
		Error    string `json:"error"`
	} `json:"results"`
}

// send posts one chunk, retrying what the server may answer later, and
// records its last line as acknowledged.
func (imp *importer) send(ctx context.Context, chunk []importRecord) error {
	var body bytes.Buffer
	for _, r := range chunk {
		body.Write(r.obj)
		body.WriteByte('\n')
	}
	var ans bulkAnswer
	for attempt := 1; ; attempt++ {
		retryAfter, err := imp.post(ctx, body.Bytes(), &ans)
		if err == nil {
			break
		}
		if retryAfter < 0 || attempt >= imp.opts.Retries {
			return fmt.Errorf("lines %d-%d: %w", chunk[0].line, chunk[len(chunk)-1].line, err)
		}
		wait := max(retryAfter, time.Duration(attempt)*time.Second)
		fmt.Fprintf(imp.stderr, "lines %d-%d: %v; retrying in %s\n", chunk[0].line, chunk[len(chunk)-1].line, err, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if len(ans.Results) != len(chunk) {
		return fmt.Errorf("lines %d-%d: the server answered %d results for %d domains", chunk[0].line, chunk[len(chunk)-1].line, len(ans.Results), len(chunk))
	}
	for _, r := range ans.Results {
		if r.Status == "error" {
			what := r.Hostname
			if what == "" {
				what = "domain"
			}
			fmt.Fprintf(imp.stderr, "line %d: %s: %s\n", chunk[r.Index].line, what, r.Error)
		}
	}
	imp.created, imp.exists, imp.errors = imp.created+ans.Created, imp.exists+ans.Exists, imp.errors+ans.Errors
	imp.sent += len(chunk)
	imp.state.Line = chunk[len(chunk)-1].line
	if imp.opts.Resume != "" {
		if err := saveImportState(imp.opts.Resume, imp.state); err != nil {
			return err
		}
	}
	rate := float64(imp.sent) / max(time.Since(imp.start).Seconds(), 1e-3)
	fmt.Fprintf(imp.stderr, "line %d of %d: %d created, %d exists, %d refused (%.0f domains/s)\n",
		imp.state.Line, imp.total, imp.created, imp.exists, imp.errors, rate)
	return nil
}

// post sends one chunk. A failure to retry has retryAfter >= 0 (how long
// the server asked to wait), one not to retry (a refused request) < 0.
func (imp *importer) post(ctx context.Context, body []byte, ans *bulkAnswer) (retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(imp.opts.API, "/")+"/api/v1/domains/bulk", bytes.NewReader(body))
	if err != nil {
		return -1, err
	}
	req.Header.Set("Authorization", "Bearer "+imp.opts.APIKey)
	req.Header.Set("Content-Type", v1.ContentTypeNDJSON)
	resp, err := imp.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, ans); err != nil {
			return 0, fmt.Errorf("decode answer: %w", err)
		}
		return 0, nil
	}
	var e struct{ Error string }
	_ = json.Unmarshal(raw, &e)
	if e.Error == "" {
		e.Error = strings.TrimSpace(string(raw))
	}
	err = fmt.Errorf("server answered %d: %s", resp.StatusCode, e.Error)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return time.Duration(secs) * time.Second, err
	}
	return -1, err
}

// skipBOM returns r past one leading UTF-8 byte order mark, which
// spreadsheet exports ("CSV UTF-8") and Windows editors write: the same
// skip as a bulk body's (v1.TrimBOM).
func skipBOM(r io.Reader) io.Reader {
	br := bufio.NewReader(r)
	head, _ := br.Peek(3)
	_, _ = br.Discard(len(head) - len(v1.TrimBOM(head)))
	return br
}

// readNDJSON calls fn with each non-blank line; the server reads each.
func readNDJSON(r io.Reader, fn func(importRecord) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if err := fn(importRecord{line: line, obj: bytes.Clone(b)}); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// readCSV calls fn with each row after the header, as the v1 domain
// object: the header names the columns, hostname (or host), port, notes
// and tags (tags separated by ";"); an empty cell leaves its field out.
func readCSV(r io.Reader, fn func(importRecord) error) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("csv header: %w", err)
	}
	cols := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		if name == "host" {
			name = "hostname"
		}
		switch name {
		case "hostname", "port", "notes", "tags":
		default:
			return fmt.Errorf("csv header: unknown column %q; the columns are hostname (or host), port, notes, tags", h)
		}
		if _, dup := cols[name]; dup {
			return fmt.Errorf("csv header: column %q twice", name)
		}
		cols[name] = i
	}
	if _, ok := cols["hostname"]; !ok {
		return errors.New("csv header: no hostname (or host) column")
	}
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		cell := func(name string) string {
			if i, ok := cols[name]; ok && i < len(row) {
				return strings.TrimSpace(row[i])
			}
			return ""
		}
		obj := map[string]any{"hostname": cell("hostname")}
		if p := cell("port"); p != "" {
			// Not a number: sent as the string, for the server to refuse
			// with the field named.
			if n, err := strconv.Atoi(p); err == nil {
				obj["port"] = n
			} else {
				obj["port"] = p
			}
		}
		if n := cell("notes"); n != "" {
			obj["notes"] = n
		}
		if t := cell("tags"); t != "" {
			tags := []string{}
			for _, tag := range strings.Split(t, ";") {
				tags = append(tags, strings.TrimSpace(tag))
			}
			obj["tags"] = tags
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		if err := fn(importRecord{line: line, obj: raw}); err != nil {
			return err
		}
	}
}

// countLines counts path's lines, for the progress lines.
func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, last := 0, byte('\n')
	buf := make([]byte, 64<<10)
	for {
		k, err := f.Read(buf)
		n += bytes.Count(buf[:k], []byte("\n"))
		if k > 0 {
			last = buf[k-1]
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if last != '\n' {
		n++
	}
	return n, nil
}

// loadImportState reads the --resume file; none yet is the start of file.
// A state of another file is refused rather than skipping lines of this one.
func loadImportState(path, file string) (importState, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return importState{File: file}, nil
	}
	if err != nil {
		return importState{}, fmt.Errorf("resume state: %w", err)
	}
	var s importState
	if err := json.Unmarshal(raw, &s); err != nil {
		return importState{}, fmt.Errorf("resume state %s: %w", path, err)
	}
	if s.File != file {
		return importState{}, fmt.Errorf("resume state %s is of %s, not %s: use another --resume file", path, s.File, file)
	}
	return s, nil
}

// saveImportState writes the state through a temporary file and a rename,
// so an interruption never leaves half a state.
func saveImportState(path string, s importState) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("resume state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("resume state: %w", err)
	}
	return nil
}
