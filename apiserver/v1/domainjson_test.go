package v1

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// TestAppendDomainListIsMarshal: the list's hand-written JSON is
// encoding/json's, byte for byte, over random pages with every field
// null or set and strings that need escapes (HTML, quotes, control
// characters, non-ASCII, invalid UTF-8).
func TestAppendDomainListIsMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	pieces := []string{"", "a", "www.example.com", "<b>", "a&b", `q"uote`, `back\slash`, "tab\there", "\x00", "\x7f",
		"é", "日本", "\u2028", "\xff\xfe", "team a", "line\nbreak", "caf\xc3"}
	str := func() string {
		s := ""
		for range rng.IntN(4) {
			s += pieces[rng.IntN(len(pieces))]
		}
		return s
	}
	strPtr := func() *string {
		if rng.IntN(3) == 0 {
			return nil
		}
		s := str()
		return &s
	}
	intPtr := func() *int {
		if rng.IntN(3) == 0 {
			return nil
		}
		n := rng.IntN(2000) - 1000
		return &n
	}
	timePtr := func() *time.Time {
		if rng.IntN(3) == 0 {
			return nil
		}
		t := time.UnixMilli(rng.Int64N(4e12)).UTC()
		if rng.IntN(2) == 0 {
			t = t.Add(time.Duration(rng.IntN(1e6))).In(time.FixedZone("x", 3600*(rng.IntN(25)-12)))
		}
		return &t
	}
	for i := range 300 {
		l := DomainList{Pagination: Pagination{Page: rng.IntN(100), PerPage: rng.IntN(101), Total: rng.IntN(1e6), TotalPages: rng.IntN(1e4)},
			NextCursor: strPtr()}
		if i%10 != 0 {
			l.Data = []Domain{}
		}
		for range rng.IntN(5) {
			d := Domain{ID: str(), Hostname: str(), Port: rng.IntN(65536), IsActive: rng.IntN(2) == 0, SSLGrade: strPtr(),
				SSLDaysRemaining: intPtr(), SSLStatus: strPtr(), WhoisDaysRemaining: intPtr(), WhoisStatus: str(), Notes: str(),
				CreatedAt: timePtr(), UpdatedAt: timePtr()}
			if rng.IntN(4) != 0 {
				d.Tags = []string{}
				for range rng.IntN(3) {
					d.Tags = append(d.Tags, str())
				}
			}
			l.Data = append(l.Data, d)
		}
		want, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendDomainList(nil, l); string(got) != string(want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	}
}
