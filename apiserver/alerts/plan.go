package alerts

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/presence"
)

// Fields of a domain's alert state, kept in the domain's record
// (accounts.DomainKey) beside the record's own fields: each begins with
// accounts.AlertFieldPrefix, which no record field does. The tenant is not
// stored: the key's hash tag and the caller (the view snapshot, Forget's
// domain list) know it.
const (
	verField       = accounts.AlertVersionField       // the view version last evaluated
	nameField      = accounts.AlertNameField          // the host:port the alerts are for, when not the record's
	condPrefix     = accounts.AlertFieldPrefix + "c|" // @c|<condition key> -> JSON active
	leavesField    = accounts.AlertFieldPrefix + "l"  // the leaf last known on each IP (encodeLeaves), then @l1, @l2... (chunks)
	announcedField = accounts.AlertFieldPrefix + "a"  // the leaf keys cert_changed told of, sorted, then @a1, @a2... (chunks)
)

// Fields of the alert state key of the layouts before the record held the
// state (oldStateKey): the short layout's, under their names there, and
// the fields the layout before it had besides. Such a state is read when
// the record holds none, and moved into the record at the domain's next
// evaluation (decodeState, plan).
const (
	oldVerField       = "@ver"
	oldNameField      = "@name"
	oldCondPrefix     = "c|"
	oldLeavesField    = "l"
	oldAnnouncedField = "a"
	oldTenantField    = "@tenant" // the domain's tenant
	oldLeafPrefix     = "leaf|"   // leaf|<ip> -> the full SHA-256 of the IP's leaf
	oldAnnouncedPfx   = "ann|"    // ann|<sha256> -> "1"
)

// leafLen is how much of a leaf's SHA-256 the state keeps: 64 bits,
// enough to tell a leaf from the one before it. Only the tenant can make
// two leaves of its own domain collide, and it would only silence its own
// cert_changed notice.
const leafLen = 8

// leafKey is the part of a leaf's SHA-256 (hex) the state keeps: its
// first leafLen bytes in projector.Compact, 11 characters (16 hex digits
// before 2026-12-06 (sixth), which storedLeafKey converts). A value that
// is no hex SHA-256 (results fed by hand) is keyed by its own SHA-256,
// so every key has the one length.
func leafKey(sha string) string {
	b, err := hex.DecodeString(sha[:min(len(sha), 2*leafLen)])
	if err != nil || len(b) != leafLen {
		sum := sha256.Sum256([]byte(sha))
		b = sum[:leafLen]
	}
	return projector.Compact.EncodeToString(b)
}

// storedLeafKey is a leaf key as the state holds it, in the form leafKey
// gives: a key of the layout before (16 hex digits) is converted.
func storedLeafKey(k string) string {
	if len(k) == 2*leafLen {
		return leafKey(k)
	}
	return k
}

// leafHex is a leaf key as the hex digits of the SHA-256 it begins, for
// messages (short).
func leafHex(k string) string {
	if b, err := projector.Compact.DecodeString(k); err == nil && len(b) == leafLen {
		return hex.EncodeToString(b)
	}
	return k
}

// Reasons an alert is resolved.
const (
	ReasonReplaced         = "certificate replaced"
	ReasonCleared          = "condition cleared"
	ReasonRemoved          = "domain removed"
	ReasonRenamed          = "domain renamed"
	ReasonThresholdRemoved = "threshold removed"
	// ReasonRenewed: the registration's expiry moved later.
	ReasonRenewed = "registration renewed"
)

// active is an alert condition the state holds. A quiet one became true
// together with a tighter one of its group and was never raised: it only
// keeps the looser threshold from being raised later.
type active struct {
	ID          string    `json:"id,omitempty"`
	Kind        string    `json:"kind"`
	Severity    string    `json:"severity,omitempty"`
	Title       string    `json:"title,omitempty"`
	Leaf        string    `json:"leaf,omitempty"`
	TriggeredAt time.Time `json:"triggered_at"`
	Group       string    `json:"group,omitempty"`
	Rank        int       `json:"rank,omitempty"`
	Quiet       bool      `json:"quiet,omitempty"`
}

// state is a domain's alert state as read.
type state struct {
	ver   int64
	name  string
	conds map[string]active
	// leaves is the leaf key (leafKey) last known on each IP, announced
	// the leaf keys cert_changed told of.
	leaves    map[string]string
	announced map[string]bool
	// stored is the state's fields as the record holds them, so that a
	// plan writes the leaves and announced chunks only when they change.
	stored map[string]string
	// moved: the state was read from its old key (oldStateKey), so the
	// record holds none of it yet and a plan writes all of it there.
	moved bool
	// record is the record's host:port as read ("" when it is gone): the
	// name of a state without nameField, which a plan leaves out when the
	// name is the record's (accounts.AlertNameField).
	record string
	// empty: there is no state, in the record or the old key.
	empty bool
}

// decodeState reads a domain's alert state from its record hash rec (the
// fields beginning with accounts.AlertFieldPrefix) or, when the record
// holds none, from old, its alert state key of the layouts before
// (oldStateKey). The reconcile script picks the version the same way.
func decodeState(domainID string, rec, old map[string]string) (state, error) {
	h := map[string]string{}
	for f, v := range rec {
		if strings.HasPrefix(f, accounts.AlertFieldPrefix) {
			h[f] = v
		}
	}
	moved := false
	if h[verField] == "" && len(old) > 0 {
		h, moved = fromOldKey(old), true
	}
	st := state{name: h[nameField], conds: map[string]active{}, leaves: map[string]string{},
		announced: map[string]bool{}, stored: h, moved: moved, empty: len(h) == 0, record: accounts.RecordName(rec)}
	if st.name == "" && !st.empty {
		st.name = st.record
	}
	if moved {
		st.stored = map[string]string{}
	}
	if v := h[verField]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return state{}, fmt.Errorf("decode alert state of %s: version %q: %w", domainID, v, err)
		}
		st.ver = n
	}
	var err error
	if st.leaves, err = decodeLeaves(readChunks(h, leavesField)); err != nil {
		return state{}, fmt.Errorf("decode alert state of %s: %w", domainID, err)
	}
	for _, sha := range strings.Fields(readChunks(h, announcedField)) {
		st.announced[storedLeafKey(sha)] = true
	}
	for f, v := range h {
		switch {
		case strings.HasPrefix(f, condPrefix):
			var a active
			if err := json.Unmarshal([]byte(v), &a); err != nil {
				return state{}, fmt.Errorf("decode alert state of %s: %s: %w", domainID, f, err)
			}
			st.conds[strings.TrimPrefix(f, condPrefix)] = a
		case strings.HasPrefix(f, oldLeafPrefix):
			// Written by a replica of the layout before the short one: it
			// wins over the short field, which it did not read.
			st.leaves[strings.TrimPrefix(f, oldLeafPrefix)] = leafKey(v)
		case strings.HasPrefix(f, oldAnnouncedPfx):
			st.announced[leafKey(strings.TrimPrefix(f, oldAnnouncedPfx))] = true
		}
	}
	return st, nil
}

// fromOldKey renames the fields of an alert state key of the layouts
// before (oldStateKey) to the record's; the fields of the layout before
// the short one keep their names (decodeState reads them), "@tenant" is
// left out.
func fromOldKey(old map[string]string) map[string]string {
	h := make(map[string]string, len(old))
	for f, v := range old {
		switch {
		case f == oldVerField:
			h[verField] = v
		case f == oldNameField:
			h[nameField] = v
		case f == oldLeavesField:
			h[leavesField] = v
		case f == oldAnnouncedField:
			h[announcedField] = v
		case strings.HasPrefix(f, oldCondPrefix):
			h[condPrefix+strings.TrimPrefix(f, oldCondPrefix)] = v
		case f == oldTenantField:
		default:
			h[f] = v
		}
	}
	return h
}

// maxValueLen is the longest field or value of a hash that Redis keeps
// as a compact listpack (hash-max-listpack-value, 64 by default): one
// longer turns the whole domain record into a hashtable, some 70 B more
// per field. The leaves and announced fields are split so as to stay
// within it (chunks).
const maxValueLen = 64

// encodeLeaves is the leaves: "<leaf key>=<ip>,<ip>" items, each leaf with
// the IPs last known to serve it (as projector.IPCode writes them: an
// IPv4 address in 6 characters), both sorted; a leaf whose item would be
// longer than maxValueLen has its IPs over several items.
func encodeLeaves(leaves map[string]string) []string {
	byLeaf := map[string][]string{}
	for ip, sha := range leaves {
		byLeaf[sha] = append(byLeaf[sha], projector.IPCode(ip))
	}
	parts := make([]string, 0, len(byLeaf))
	for _, sha := range slices.Sorted(maps.Keys(byLeaf)) {
		slices.Sort(byLeaf[sha])
		part := ""
		for _, ip := range byLeaf[sha] {
			if part != "" && len(part)+1+len(ip) > maxValueLen {
				parts, part = append(parts, part), ""
			}
			if part == "" {
				part = sha + "=" + ip
			} else {
				part += "," + ip
			}
		}
		parts = append(parts, part)
	}
	return parts
}

// decodeLeaves reads encodeLeaves' items, joined by spaces: IP -> leaf
// key. Items of the layout before (16 hex digits, IPs as text) read too.
func decodeLeaves(v string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Fields(v) {
		sha, ips, ok := strings.Cut(part, "=")
		if !ok || sha == "" {
			return nil, fmt.Errorf("leaves %q: want <leaf>=<ip>,<ip>", v)
		}
		for _, ip := range strings.Split(ips, ",") {
			out[storedIP(ip)] = storedLeafKey(sha)
		}
	}
	return out, nil
}

// storedIP reads an IP of the leaves: IPCode's, or the text of the layout
// before (an address holds "." or ":", which IPCode's never does).
func storedIP(s string) string {
	if strings.ContainsAny(s, ".:") && !strings.HasPrefix(s, "=") {
		return s
	}
	if ip, err := projector.IPOf(s); err == nil {
		return ip
	}
	return s
}

// chunks joins items by spaces into values of at most maxValueLen bytes
// (an item longer than that alone in its value).
func chunks(items []string) []string {
	var out []string
	for _, it := range items {
		if n := len(out); n > 0 && len(out[n-1])+1+len(it) <= maxValueLen {
			out[n-1] += " " + it
			continue
		}
		out = append(out, it)
	}
	return out
}

// chunkField is the field of the i-th value of base's chunks: base, then
// base1, base2, ...
func chunkField(base string, i int) string {
	if i == 0 {
		return base
	}
	return base + strconv.Itoa(i)
}

// readChunks is the items of base's chunks in h, joined by spaces.
func readChunks(h map[string]string, base string) string {
	var vs []string
	for i := 0; ; i++ {
		v, ok := h[chunkField(base, i)]
		if !ok {
			return strings.Join(vs, " ")
		}
		vs = append(vs, v)
	}
}

// storeChunks writes items as base's chunks (chunks) in ch: each value
// the state does not hold already, and deletes the chunks beyond them.
func (st state) storeChunks(ch *change, base string, items []string) {
	vs := chunks(items)
	for i, v := range vs {
		if f := chunkField(base, i); v != st.stored[f] {
			ch.set[f] = v
		}
	}
	for i := len(vs); ; i++ {
		f := chunkField(base, i)
		if _, ok := st.stored[f]; !ok {
			return
		}
		ch.del = append(ch.del, f)
	}
}

// raised is an alert to raise: its event and the record the tenant's
// alert list shows.
type raised struct {
	event   events.Envelope
	payload events.AlertRaisedV1
}

// resolved is an alert to resolve.
type resolved struct {
	event   events.Envelope
	payload events.AlertResolvedV1
}

// change is what one evaluation does to a domain's alerts.
type change struct {
	set      map[string]string // state fields to write
	del      []string          // state fields to delete
	raised   []raised
	resolved []resolved
	// drop: the domain was removed; its state goes once its alerts are
	// resolved (the record's alert fields, and the old key).
	drop bool
	// record: the state takes its name from the record, which must still
	// have this host:port when the change applies.
	record string
}

// plan compares what snap says with the alert state st and returns the
// change that brings the state in line: raises for conditions that began,
// resolutions for those that cleared; a removed domain's alerts are all
// resolved and its state dropped. A state read from its old key is
// written into the record whole, in the record's layout (the script
// deletes the old key). now is used only when the view has no scan to
// date the change by.
func plan(st state, snap projector.Snapshot, f facts, tenant string, settings Settings, cfg Config, now time.Time) (change, error) {
	ch := change{set: map[string]string{}}
	// Changes are dated by the latest scan of the view or lookup of its
	// registration, so every replica dates one snapshot's alerts alike.
	at := now.UTC().Truncate(time.Millisecond)
	if t := latestFact(snap, f); !t.IsZero() {
		at = t
	}
	name := snap.Name
	if name == "" {
		name = st.name
	}
	host, port := splitName(name)

	resolve := func(key string, a active, reason string) error {
		ch.del = append(ch.del, condPrefix+key)
		if a.Quiet || a.ID == "" {
			return nil
		}
		p := events.AlertResolvedV1{
			AlertID: a.ID, TenantID: tenant, DomainID: snap.DomainID, Hostname: host, Port: port,
			AlertType: a.Kind, Severity: a.Severity, Title: a.Title, TriggeredAt: a.TriggeredAt,
			ResolvedAt: at, Reason: reason,
		}
		id, err := uuid.Parse(a.ID)
		if err != nil {
			return fmt.Errorf("alert state of %s: id %q: %w", snap.DomainID, a.ID, err)
		}
		ev, err := events.NewWithID(events.AlertResolvedEventID(id), events.AlertResolved, tenant, a.ID, p)
		if err != nil {
			return err
		}
		ev.OccurredAt = at
		ch.resolved = append(ch.resolved, resolved{event: ev, payload: p})
		return nil
	}

	// A removed or renamed domain's alerts are over: the name they were
	// about is no longer monitored under this id.
	if snap.Removed || (st.name != "" && snap.Name != "" && snap.Name != st.name) {
		reason := ReasonRemoved
		if !snap.Removed {
			reason = ReasonRenamed
			// Resolutions name the old endpoint.
			host, port = splitName(st.name)
		}
		for _, key := range slices.Sorted(maps.Keys(st.conds)) {
			if err := resolve(key, st.conds[key], reason); err != nil {
				return change{}, err
			}
		}
		if snap.Removed {
			ch.drop = true
			return ch, nil
		}
		// What was known of the old name's leaves is forgotten.
		host, port = splitName(name)
		st = state{ver: st.ver, name: st.name, stored: st.stored, moved: st.moved, record: st.record, conds: map[string]active{},
			leaves: map[string]string{}, announced: map[string]bool{}}
	}

	v := evaluate(snap, f, host, settings, cfg)
	seen := map[string]bool{}
	for _, e := range snap.Entries {
		if e.CertificateFound {
			seen[e.LeafSHA256] = true
		}
	}
	for _, key := range slices.Sorted(maps.Keys(st.conds)) {
		a := st.conds[key]
		if _, ok := v.conds[key]; ok || v.unknown[a.Kind] {
			continue
		}
		reason := ReasonCleared
		switch {
		case a.Leaf != "" && !seen[a.Leaf]:
			reason = ReasonReplaced
		case a.Kind == events.AlertSSLExpiry && !slices.Contains(settings.ExpiryThresholdsDays, a.Rank):
			reason = ReasonThresholdRemoved
		case a.Kind == events.AlertDomainExpiry && !slices.Contains(settings.DomainExpiryThresholdsDays, a.Rank):
			reason = ReasonThresholdRemoved
		case a.Kind == events.AlertDomainExpiry || a.Kind == events.AlertDomainExpired:
			// Time only brings an expiry nearer: the condition clears
			// only when the expiry moved later.
			reason = ReasonRenewed
		}
		if err := resolve(key, a, reason); err != nil {
			return change{}, err
		}
	}

	// New conditions. In a group, only the tightest that is tighter than
	// any already active is raised; the rest are kept quiet.
	tightest := map[string]int{}
	for _, a := range st.conds {
		if a.Group == "" {
			continue
		}
		if r, ok := tightest[a.Group]; !ok || a.Rank < r {
			tightest[a.Group] = a.Rank
		}
	}
	newByGroup := map[string]string{}
	for key, c := range v.conds {
		if _, ok := st.conds[key]; ok || c.group == "" {
			continue
		}
		if r, ok := tightest[c.group]; ok && c.rank >= r {
			continue
		}
		if k, ok := newByGroup[c.group]; !ok || c.rank < v.conds[k].rank {
			newByGroup[c.group] = key
		}
	}
	for _, key := range slices.Sorted(maps.Keys(v.conds)) {
		c := v.conds[key]
		if _, ok := st.conds[key]; ok {
			continue
		}
		a := active{Kind: c.kind, Leaf: c.leaf, TriggeredAt: at, Group: c.group, Rank: c.rank}
		if c.group != "" && newByGroup[c.group] != key {
			a.Quiet = true
		} else {
			r, err := raise(snap, tenant, host, port, c, at, false)
			if err != nil {
				return change{}, err
			}
			ch.raised = append(ch.raised, r)
			a.ID, a.Severity, a.Title = r.payload.AlertID, c.severity, c.title
		}
		if err := ch.setCond(key, a); err != nil {
			return change{}, err
		}
	}
	if st.moved {
		// The record holds none of the state yet: the conditions that go
		// on are written there too.
		for _, key := range slices.Sorted(maps.Keys(st.conds)) {
			if _, ok := ch.set[condPrefix+key]; ok || slices.Contains(ch.del, condPrefix+key) {
				continue
			}
			if err := ch.setCond(key, st.conds[key]); err != nil {
				return change{}, err
			}
		}
	}

	if err := certChanges(st, snap, tenant, host, port, at, &ch); err != nil {
		return change{}, err
	}
	switch {
	case name == st.record:
		// The record says it: no field, and the script checks that the
		// record still does (a rename in between pins the name it had).
		if st.stored[nameField] != "" {
			ch.del = append(ch.del, nameField)
		}
		ch.record = name
	case st.name != name || st.moved || st.stored[nameField] == "":
		ch.set[nameField] = name
	}
	return ch, nil
}

// setCond writes the active condition key as a in the state.
func (ch *change) setCond(key string, a active) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("marshal alert state: %w", err)
	}
	ch.set[condPrefix+key] = string(body)
	return nil
}

// certChanges raises cert_changed, once per new leaf of the domain, when
// an IP no region shows its last known leaf on any more serves another.
// The first leaf seen on an IP is not a change. What it remembers of IPs
// and leaves no entry shows any more is forgotten.
func certChanges(st state, snap projector.Snapshot, tenant, host string, port int, at time.Time, ch *change) error {
	type seen struct {
		shas   map[string]bool
		newest string
		newAt  time.Time
	}
	byIP := map[string]*seen{} // shas: leaf keys; newest: a full SHA-256
	present := map[string]bool{}
	shas := map[string]bool{} // leaf keys
	for _, e := range snap.Entries {
		present[e.IP] = true
		if !e.CertificateFound || e.IP == "" {
			continue
		}
		k := leafKey(e.LeafSHA256)
		shas[k] = true
		s := byIP[e.IP]
		if s == nil {
			s = &seen{shas: map[string]bool{}}
			byIP[e.IP] = s
		}
		s.shas[k] = true
		if e.ScannedAt.After(s.newAt) || (e.ScannedAt.Equal(s.newAt) && e.LeafSHA256 > s.newest) {
			s.newest, s.newAt = e.LeafSHA256, e.ScannedAt
		}
	}
	// What is remembered of IPs and leaves no entry shows any more goes.
	leaves := map[string]string{}
	for ip, sha := range st.leaves {
		if present[ip] {
			leaves[ip] = sha
		}
	}
	announced := map[string]bool{}
	for sha := range st.announced {
		if shas[sha] {
			announced[sha] = true
		}
	}
	changed := map[string]sightings{} // new leaf -> IPs that changed to it
	from := map[string]map[string]bool{}
	for _, ip := range slices.Sorted(maps.Keys(byIP)) {
		s := byIP[ip]
		prev := st.leaves[ip]
		if prev != "" && s.shas[prev] {
			continue
		}
		k := leafKey(s.newest)
		leaves[ip] = k
		if prev == "" || st.announced[k] {
			continue
		}
		if changed[s.newest] == nil {
			changed[s.newest], from[s.newest] = sightings{}, map[string]bool{}
		}
		for _, e := range snap.Entries {
			if e.IP == ip && e.LeafSHA256 == s.newest {
				changed[s.newest].add(ip, e.Region)
			}
		}
		from[s.newest][short(leafHex(prev))] = true
	}
	for _, sha := range slices.Sorted(maps.Keys(changed)) {
		where := changed[sha]
		c := condition{
			key: events.AlertCertChanged + "|" + sha, kind: events.AlertCertChanged, severity: events.SeverityInfo,
			title: "Certificate changed",
			message: fmt.Sprintf("%s serves a new certificate %s (was %s) on %s.",
				host, short(sha), strings.Join(sortedKeys(from[sha]), ", "), where),
			leaf: sha, ips: where.ips(), regions: where.regions(),
		}
		r, err := raise(snap, tenant, host, port, c, at, true)
		if err != nil {
			return err
		}
		ch.raised = append(ch.raised, r)
		announced[leafKey(sha)] = true
	}
	st.storeChunks(ch, leavesField, encodeLeaves(leaves))
	st.storeChunks(ch, announcedField, sortedKeys(announced))
	return nil
}

// raise builds the alert.raised event of c. Its id is named by the
// domain, the condition and the snapshot's version.
func raise(snap projector.Snapshot, tenant, host string, port int, c condition, at time.Time, oneShot bool) (raised, error) {
	id := events.AlertID(snap.DomainID, c.key, snap.Version)
	p := events.AlertRaisedV1{
		AlertID: id.String(), TenantID: tenant, DomainID: snap.DomainID, Hostname: host, Port: port,
		AlertType: c.kind, Severity: c.severity, Title: c.title, Message: c.message, ThresholdDays: c.threshold,
		LeafSHA256: c.leaf, IPs: c.ips, Regions: c.regions, TriggeredAt: at, OneShot: oneShot,
	}
	ev, err := events.NewWithID(id, events.AlertRaised, tenant, id.String(), p)
	if err != nil {
		return raised{}, err
	}
	ev.OccurredAt = at
	return raised{event: ev, payload: p}, nil
}

func splitName(name string) (string, int) {
	host, p, err := net.SplitHostPort(name)
	if err != nil {
		return name, 0
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

// latestFact is the later of the view's newest scan and the newest answer
// of its registration; zero without either.
func latestFact(snap projector.Snapshot, f facts) time.Time {
	at := latestScan(snap)
	if a := f.reg.Answer; a != nil && a.LookedUpAt.After(at) {
		at = a.LookedUpAt.UTC().Truncate(time.Millisecond)
	}
	if m := f.managed; m != nil && m.UpdatedAt.After(at) {
		at = m.UpdatedAt.UTC().Truncate(time.Millisecond)
	}
	return at
}

// facts are what a domain's alerts are evaluated on besides its view: the
// registration of its registrable domain, the managed certificate of its
// name, if the tenant has certfleet order one (nil otherwise), and when
// each region's agents were last seen.
type facts struct {
	reg     projector.Registration
	managed *managedcert.Certificate
	regions []presence.Region
}

// stale lists the regions stale at at: seen, but not within after. A
// region never seen (results fed by hand) is not stale.
func (f facts) stale(at time.Time, after time.Duration) map[string]bool {
	out := map[string]bool{}
	for _, r := range f.regions {
		if r.Stale(at, after) {
			out[r.Name] = true
		}
	}
	return out
}

// latestScan is when the view's newest scan finished; zero without one.
func latestScan(snap projector.Snapshot) time.Time {
	var at time.Time
	for _, e := range snap.Entries {
		if e.ScannedAt.After(at) {
			at = e.ScannedAt
		}
	}
	return at.UTC().Truncate(time.Millisecond)
}
