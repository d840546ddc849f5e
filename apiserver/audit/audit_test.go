package audit

import "testing"

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"negative query timeout", Config{QueryTimeout: -1}, false},
		{"negative record timeout", Config{RecordTimeout: -1}, false},
		{"default over max", Config{DefaultLimit: 50, MaxLimit: 10}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("validate: got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
