package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/certfleet/certfleet/internal/shortid"
)

// domainRecord is what a job needs of a domain besides its id.
type domainRecord struct {
	TenantID string `json:"tenant_id"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
}

// A domain's value in its bucket of domains:{NN}:<b> is positional and
// short, so that a bucket stays a listpack (Redis converts a hash to a
// hashtable once a value passes hash-max-listpack-value, 64 bytes by
// default):
//
//	<version>|<tenant>|<port>|<host>   a domain
//	<version>                          a removed domain (tombstone)
//
// version is the occurred_at (unix ms) of the last domain event applied;
// tenant is a UUID tenant id as 22 characters of unpadded base64url, any
// other id as "=" and the id; port is empty for 443; host comes last and
// may hold anything.
//
// The layout before it kept JSON {"tenant_id","host","port"} in
// domains:{NN} and the version apart in versions:{NN}; parseRecord reads
// that JSON too.

// encodeRecord returns rec in the positional form, without the version.
func encodeRecord(rec domainRecord) (string, error) {
	tenant := shortid.URL.Encode(rec.TenantID)
	if strings.Contains(tenant, "|") {
		return "", fmt.Errorf("tenant id %q holds a |", rec.TenantID)
	}
	port := ""
	if rec.Port != 443 {
		port = strconv.Itoa(rec.Port)
	}
	return tenant + "|" + port + "|" + rec.Host, nil
}

// storedValue is the bucket value of a domain at version: rec from
// encodeRecord, "" for a tombstone.
func storedValue(version int64, rec string) string {
	v := strconv.FormatInt(version, 10)
	if rec == "" {
		return v
	}
	return v + "|" + rec
}

// errTombstone is parseValue's answer for a removed domain.
var errTombstone = errors.New("domain removed")

// parseValue reads a bucket value: the version and the record, or
// errTombstone with the version for a removed domain.
func parseValue(s string) (int64, domainRecord, error) {
	v, rec, ok := strings.Cut(s, "|")
	version, err := strconv.ParseInt(v, 10, 64)
	if err != nil || version < 0 || v != strconv.FormatInt(version, 10) {
		return 0, domainRecord{}, fmt.Errorf("bad version in domain value %q", s)
	}
	if !ok {
		return version, domainRecord{}, errTombstone
	}
	r, err := parseRecord(rec)
	return version, r, err
}

// parseRecord reads a record in the positional form (without version) or
// the JSON of the layout before.
func parseRecord(s string) (domainRecord, error) {
	if strings.HasPrefix(s, "{") {
		var rec domainRecord
		if err := json.Unmarshal([]byte(s), &rec); err != nil {
			return domainRecord{}, fmt.Errorf("decode domain record: %w", err)
		}
		if rec.Port == 0 {
			rec.Port = 443
		}
		if rec.Host == "" || rec.Port < 1 || rec.Port > 65535 {
			return domainRecord{}, fmt.Errorf("bad domain record %q", s)
		}
		return rec, nil
	}
	parts := strings.SplitN(s, "|", 3)
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return domainRecord{}, fmt.Errorf("bad domain record %q", s)
	}
	rec := domainRecord{Host: parts[2], Port: 443}
	var err error
	if rec.TenantID, err = shortid.URL.Decode(parts[0]); err != nil {
		return domainRecord{}, fmt.Errorf("bad tenant in domain record %q", s)
	}
	if parts[1] != "" {
		p, err := strconv.Atoi(parts[1])
		if err != nil || p < 1 || p > 65535 || parts[1] != strconv.Itoa(p) {
			return domainRecord{}, fmt.Errorf("bad port in domain record %q", s)
		}
		rec.Port = p
	}
	return rec, nil
}
