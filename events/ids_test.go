package events

import "testing"

func TestIDsAreStableAndDistinct(t *testing.T) {
	if a, b := TenantID("Ops@Example.com"), TenantID("ops@example.com"); a != b {
		t.Errorf("TenantID differs by case: got %s and %s, want equal", a, b)
	}
	if a, b := TenantID("a@example.com"), TenantID("b@example.com"); a == b {
		t.Errorf("TenantID of different emails: both %s, want different", a)
	}
	t1, t2 := TenantID("a@example.com"), TenantID("b@example.com")
	cases := []struct {
		name string
		a, b string
	}{
		{"tenant", DomainID(t1, "example.com", 443), DomainID(t2, "example.com", 443)},
		{"port", DomainID(t1, "example.com", 443), DomainID(t1, "example.com", 8443)},
		{"host", DomainID(t1, "example.com", 443), DomainID(t1, "example.org", 443)},
		{"job due", JobID("d", 1).String(), JobID("d", 2).String()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.a == c.b {
				t.Errorf("ids collide: both %s, want different", c.a)
			}
		})
	}
	if a, b := DomainID(t1, "example.com", 443), DomainID(t1, "example.com", 443); a != b {
		t.Errorf("DomainID not stable: got %s then %s", a, b)
	}
}
