package projector

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/events"
)

// How a view hash keeps its entries (docs/scaling.md: the views were four
// fifths of Redis per domain, a certificate stored once per region and IP
// with every field named in full):
//
//   - "<region>|<ip>" holds entryMark and then a storedEntry: what the scan
//     saw at the IP, without what the field name says (region, IP), what
//     the region's meta "@<region>" says (when the scan finished, its
//     event), and the certificate's facts;
//   - "#<sha256>" holds a storedCert: the facts of a leaf, once per view
//     however many regions and IPs serve it. The scripts that change
//     entries end with dropUnusedLeaves, so a leaf no entry refers to any
//     more goes.
//
// Entries written before this layout are whole ExpEntry JSON objects
// ("{..."); they decode as before.
const (
	entryMark  = "2"
	leafPrefix = "#"
)

// storedEntry is an entry's own part, with short names.
type storedEntry struct {
	Port                  int            `json:"p,omitempty"`
	Outcome               events.Outcome `json:"o"`
	Detail                string         `json:"d,omitempty"`
	CertificateFound      bool           `json:"f,omitempty"`
	LeafSHA256            string         `json:"l,omitempty"`
	ChainLength           int            `json:"n,omitempty"`
	TLSVersion            string         `json:"v,omitempty"`
	CipherSuite           string         `json:"cs,omitempty"`
	ChainValid            bool           `json:"cv,omitempty"`
	HostnameValid         bool           `json:"hv,omitempty"`
	ConnectMS             int64          `json:"c,omitempty"`
	HandshakeMS           int64          `json:"h,omitempty"`
	HTTPStatus            int            `json:"hs,omitempty"`
	HSTSMaxAge            int64          `json:"sa,omitempty"`
	HSTSIncludeSubdomains bool           `json:"si,omitempty"`
	LegacyTLSChecked      bool           `json:"lc,omitempty"`
	LegacyTLS             []string       `json:"lt,omitempty"`
}

// storedCert is a leaf's facts, with short names.
type storedCert struct {
	Subject            string    `json:"s,omitempty"`
	Issuer             string    `json:"i,omitempty"`
	SANs               []string  `json:"n,omitempty"`
	Serial             string    `json:"r,omitempty"`
	NotBefore          time.Time `json:"b"`
	NotAfter           time.Time `json:"a"`
	KeyType            string    `json:"k,omitempty"`
	KeyBits            int       `json:"kb,omitempty"`
	SignatureAlgorithm string    `json:"g,omitempty"`
}

// dropUnusedLeaves is the Lua that applyScanScript and applyRemovedScript
// end with: it removes the leaf facts ("#<key>") no entry of the view
// KEYS[1] refers to any more. An entry refers to its leaf by fingerprint
// ("l") or, with none, by its region and IP (leafKey). Entries of the old
// layout carry their facts and refer to none.
const dropUnusedLeaves = `
local used, leaves = {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local c = string.sub(f, 1, 1)
  if c == '#' then
    leaves[#leaves + 1] = f
  elseif c ~= '@' and string.sub(v, 1, 1) == '` + entryMark + `' then
    local sha = string.match(v, '"l":"(%w+)"')
    if sha then
      used['#' .. sha] = true
    elseif string.find(v, '"f":true', 1, true) then
      local sep = string.find(f, '|', 1, true)
      used['#ip:' .. string.sub(f, 1, sep - 1) .. '/' .. string.sub(f, sep + 1)] = true
    end
  end
end
for _, f in ipairs(leaves) do
  if not used[f] then redis.call('HDEL', KEYS[1], f) end
end
`

// encodeResults turns one region's results into the view fields that
// applyScanScript writes: entries by IP (it puts "<region>|" before
// them), and leaf facts by their own name ("#...", written as they are).
func encodeResults(region string, port int, results []events.IPResult) ([]any, error) {
	out := make([]any, 0, 2*len(results)+2)
	leaves := map[string]bool{}
	for _, r := range results {
		e := storedEntry{
			Port: port, Outcome: r.Outcome, Detail: r.Detail, CertificateFound: r.CertificateFound, LeafSHA256: r.LeafSHA256,
			ChainLength: r.ChainLength, TLSVersion: r.TLSVersion, CipherSuite: r.CipherSuite, ChainValid: r.ChainValid,
			HostnameValid: r.HostnameValid, ConnectMS: r.ConnectMS, HandshakeMS: r.HandshakeMS, HTTPStatus: r.HTTPStatus,
			HSTSMaxAge: r.HSTSMaxAge, HSTSIncludeSubdomains: r.HSTSIncludeSubdomains, LegacyTLSChecked: r.LegacyTLSChecked,
			LegacyTLS: r.LegacyTLS,
		}
		body, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		out = append(out, r.IP, entryMark+string(body))
		key := leafKey(r.LeafSHA256, region, r.IP)
		if !r.CertificateFound || leaves[key] {
			continue
		}
		leaves[key] = true
		c, err := json.Marshal(storedCert{
			Subject: r.Subject, Issuer: r.Issuer, SANs: r.SANs, Serial: r.Serial, NotBefore: r.NotBefore, NotAfter: r.NotAfter,
			KeyType: r.KeyType, KeyBits: r.KeyBits, SignatureAlgorithm: r.SignatureAlgorithm,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, leafPrefix+key, string(c))
	}
	return out, nil
}

// leafKey names a leaf's facts in a view: its fingerprint, or for a
// result that carries none, or one of other characters than letters and
// digits (results fed by hand), its region and IP, so that two unnamed
// certificates never share facts. dropUnusedLeaves finds the same names
// (Lua's %w is [0-9A-Za-z]).
func leafKey(sha, region, ip string) string {
	if sha == "" || strings.ContainsFunc(sha, func(r rune) bool {
		return (r < '0' || r > '9') && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z')
	}) {
		return "ip:" + region + "/" + ip
	}
	return sha
}

// decodeEntries reads the entries of a view hash (every field; meta
// fields are skipped), in no particular order.
func decodeEntries(domainID string, all map[string]string) ([]ExpEntry, error) {
	out := make([]ExpEntry, 0, len(all))
	for f, v := range all {
		if strings.HasPrefix(f, metaPrefix) || strings.HasPrefix(f, leafPrefix) {
			continue
		}
		region, suffix, _ := strings.Cut(f, "|")
		body, ok := strings.CutPrefix(v, entryMark)
		if !ok {
			var e ExpEntry
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return nil, fmt.Errorf("decode expiration entry %s of %s: %w", f, domainID, err)
			}
			out = append(out, e)
			continue
		}
		var s storedEntry
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			return nil, fmt.Errorf("decode expiration entry %s of %s: %w", f, domainID, err)
		}
		e := ExpEntry{Region: region, Port: s.Port, IPResult: events.IPResult{
			IP: suffix, Outcome: s.Outcome, Detail: s.Detail, CertificateFound: s.CertificateFound, LeafSHA256: s.LeafSHA256,
			ChainLength: s.ChainLength, TLSVersion: s.TLSVersion, CipherSuite: s.CipherSuite, ChainValid: s.ChainValid,
			HostnameValid: s.HostnameValid, ConnectMS: s.ConnectMS, HandshakeMS: s.HandshakeMS, HTTPStatus: s.HTTPStatus,
			HSTSMaxAge: s.HSTSMaxAge, HSTSIncludeSubdomains: s.HSTSIncludeSubdomains, LegacyTLSChecked: s.LegacyTLSChecked,
			LegacyTLS: s.LegacyTLS,
		}}
		// The region's meta: "<finished ms>|<event id>".
		if meta, ok := all[metaPrefix+region]; ok {
			ms, id, _ := strings.Cut(meta, "|")
			n, err := strconv.ParseInt(ms, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("decode expiration entry %s of %s: meta %q: %w", f, domainID, meta, err)
			}
			e.ScannedAt, e.EventID = time.UnixMilli(n).UTC(), id
		}
		if s.CertificateFound {
			c, ok := all[leafPrefix+leafKey(s.LeafSHA256, region, suffix)]
			if !ok {
				return nil, fmt.Errorf("decode expiration entry %s of %s: no facts of leaf %s", f, domainID, s.LeafSHA256)
			}
			var sc storedCert
			if err := json.Unmarshal([]byte(c), &sc); err != nil {
				return nil, fmt.Errorf("decode leaf %s of %s: %w", s.LeafSHA256, domainID, err)
			}
			e.Subject, e.Issuer, e.SANs, e.Serial = sc.Subject, sc.Issuer, sc.SANs, sc.Serial
			e.NotBefore, e.NotAfter = sc.NotBefore, sc.NotAfter
			e.KeyType, e.KeyBits, e.SignatureAlgorithm = sc.KeyType, sc.KeyBits, sc.SignatureAlgorithm
			e.NoExpiry = e.HasNoExpiry()
		}
		out = append(out, e)
	}
	return out, nil
}
