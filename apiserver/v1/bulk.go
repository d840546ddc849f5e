package v1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// MaxBulkItems is how many domains one POST /domains/bulk may carry.
const MaxBulkItems = 10_000

// ContentTypeNDJSON is the media type of a bulk body with one JSON object
// a line; any other body is a JSON array.
const ContentTypeNDJSON = "application/x-ndjson"

// domainSourceImport is the Source of domains added through POST
// /domains/bulk.
const domainSourceImport = "import"

// Statuses of a bulk item.
const (
	bulkCreated = "created"
	bulkExists  = "exists"
	bulkError   = "error"
)

// bulkItem is one item of a bulk body, as sent: raw is its JSON, line its
// line in an NDJSON body (1-based), else 0.
type bulkItem struct {
	raw  []byte
	line int
}

// check reads and checks the item exactly as POST /domains reads and
// checks its body, and returns the domain to add.
func (it bulkItem) check() (accounts.NewDomain, error) {
	var req createDomainRequest
	if err := httpapi.DecodeObject("item", it.raw, &req); err != nil {
		return accounts.NewDomain{}, err
	}
	return req.newDomain(domainSourceImport)
}

// bulkSegment is how many items the handler checks ahead while the store
// adds the previous ones, so that reading JSON and Redis work at once.
const bulkSegment = 2500

// errTooManyItems is a bulk body over MaxBulkItems.
var errTooManyItems = &httpapi.Error{Status: http.StatusRequestEntityTooLarge,
	Msg: fmt.Sprintf("too many items: a bulk request carries at most %d domains; split the import into several requests (certfleet import does)", MaxBulkItems)}

// bom is the UTF-8 byte order mark, which Windows editors and spreadsheet
// exports ("CSV UTF-8", "Unicode text") put at the start of a file.
var bom = []byte("\ufeff")

// TrimBOM returns b without one leading UTF-8 byte order mark: the one
// way a bulk body and the files of `certfleet import` (CSV, NDJSON) skip
// it. A mark anywhere else is data, left for the parser to refuse.
func TrimBOM(b []byte) []byte { return bytes.TrimPrefix(b, bom) }

// parseBulk splits a bulk body into its items: a JSON array of the
// objects POST /domains takes, or with ndjson one such object a line
// (blank lines are skipped), after one leading byte order mark (TrimBOM). Each item is read later (bulkItem.check), so
// an item that is not such an object (a bad NDJSON line, an array element
// of the wrong shape) fails alone and the others still land. A body that
// is not an array at all, or is broken JSON past recovery, is one
// BadRequest; more than max items is errTooManyItems.
func parseBulk(body []byte, ndjson bool, max int) ([]bulkItem, error) {
	body = TrimBOM(body)
	var items []bulkItem
	add := func(raw []byte, line int) error {
		if len(items) == max {
			return errTooManyItems
		}
		items = append(items, bulkItem{raw: raw, line: line})
		return nil
	}
	if ndjson {
		for n, line := range bytes.Split(body, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			if err := add(line, n+1); err != nil {
				return nil, err
			}
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(body))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return nil, httpapi.BadRequest(fmt.Sprintf("request body must be a JSON array of domains, or %s with one domain a line", ContentTypeNDJSON))
		}
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, httpapi.BadRequest(fmt.Sprintf("request body is not valid JSON after %d items", len(items)))
			}
			if err := add(raw, 0); err != nil {
				return nil, err
			}
		}
		if _, err := dec.Token(); err != nil {
			return nil, httpapi.BadRequest("request body is not valid JSON: the array does not end")
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, httpapi.BadRequest("request body has data after the array")
		}
	}
	if len(items) == 0 {
		return nil, httpapi.BadRequest("request body has no domains")
	}
	return items, nil
}

// bulkResult is one item's outcome, in request order: created or exists
// (with the domain's id: the same id a retry reports), or error with why.
type bulkResult struct {
	Index    int    `json:"index"`
	Line     int    `json:"line,omitempty"`
	Status   string `json:"status"`
	ID       string `json:"id,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	Port     int    `json:"port,omitempty"`
	Error    string `json:"error,omitempty"`
}

// bulkAnswer is POST /domains/bulk's answer.
type bulkAnswer struct {
	Created int          `json:"created"`
	Exists  int          `json:"exists"`
	Errors  int          `json:"errors"`
	Results []bulkResult `json:"results"`
}

// bulkCreateDomains is POST /domains/bulk: many POST /domains in one
// request, each item checked as that route checks its body and added by
// the same Lua add (accounts.AddDomains: one script call per 500 domains).
// Items are independent:
// one failing (bad, over the quota) does not stop the others. Adding a
// domain the tenant has already answers exists with its id, so a retried
// import adds nothing twice. The first scans of the new domains are spread
// over a window (accounts.Config.ImportSpacing) instead of all due at once.
func (h *Handler) bulkCreateDomains(c *gin.Context) {
	// Read into a buffer of the announced size: a 10,000-item body is
	// megabytes, and growing the buffer as it comes copies it over again.
	buf := bytes.NewBuffer(make([]byte, 0, min(max(c.Request.ContentLength, 0), 16<<20)+bytes.MinRead))
	_, err := buf.ReadFrom(c.Request.Body)
	body := buf.Bytes()
	if err != nil {
		e := httpapi.ReadError(err)
		if e.Status == http.StatusRequestEntityTooLarge {
			e.Msg += "; split the import into several requests (certfleet import does)"
		}
		httpapi.Fail(c, e)
		return
	}
	mt, _, _ := mime.ParseMediaType(c.ContentType())
	items, err := parseBulk(body, mt == ContentTypeNDJSON, MaxBulkItems)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	p := httpapi.Principal(c)
	out := bulkAnswer{Results: make([]bulkResult, len(items))}
	// One goroutine checks the items a segment ahead while this one adds
	// the checked ones; it ends before the handler returns, error or not.
	type segment struct {
		nds []accounts.NewDomain
		at  []int // the item of each of nds
	}
	segments := make(chan segment, 1)
	go func() {
		defer close(segments)
		for from := 0; from < len(items); from += bulkSegment {
			var sg segment
			for i := from; i < min(from+bulkSegment, len(items)); i++ {
				out.Results[i] = bulkResult{Index: i, Line: items[i].line}
				nd, err := items[i].check()
				if err != nil {
					out.Results[i].Status, out.Results[i].Error = bulkError, itemError(err)
					continue
				}
				sg.nds, sg.at = append(sg.nds, nd), append(sg.at, i)
			}
			segments <- sg
		}
	}()
	defer func() {
		for range segments {
		}
	}()
	for sg := range segments {
		results, err := h.accounts.AddDomains(c.Request.Context(), p.TenantID, sg.nds)
		if err != nil {
			httpapi.Fail(c, err)
			return
		}
		for j, r := range results {
			res := &out.Results[sg.at[j]]
			res.Hostname, res.Port = r.Domain.Host, r.Domain.Port
			switch {
			case r.Err != nil:
				res.Status, res.Error = bulkError, itemError(r.Err)
			case r.Added:
				res.Status, res.ID = bulkCreated, r.Domain.ID
			default:
				res.Status, res.ID = bulkExists, r.Domain.ID
				// As POST /domains' 409: a held key sees only its own.
				if err := h.accounts.CanRead(c.Request.Context(), p, r.Domain.ID); err != nil {
					res.ID = ""
				}
			}
		}
	}
	for _, r := range out.Results {
		switch r.Status {
		case bulkCreated:
			out.Created++
		case bulkExists:
			out.Exists++
		default:
			out.Errors++
		}
	}
	c.JSON(http.StatusOK, out)
}

// itemError is the message the single add would answer for err.
func itemError(err error) string {
	if e := answer(err); e != nil {
		return e.Msg
	}
	return err.Error()
}
