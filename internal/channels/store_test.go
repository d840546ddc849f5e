package channels

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

const testPassphrase = "correct horse battery staple"

// testEnv is a Redis and a store on it.
type testEnv struct {
	t     *testing.T
	rdb   *redis.Client
	store *Store
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	st, err := New(Config{Passphrase: testPassphrase}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, rdb: rdb, store: st}
}

func (e *testEnv) channel(tenant string, in ChannelInput) Channel {
	e.t.Helper()
	ch, err := e.store.Create(context.Background(), tenant, in)
	if err != nil {
		e.t.Fatalf("create channel: %v", err)
	}
	return ch
}

func ptr[T any](v T) *T { return &v }

// streamEvents returns the events named name, oldest first.
func streamEvents(t *testing.T, rdb *redis.Client, name string) []events.Envelope {
	t.Helper()
	evs, err := events.ReadEventsNamed(context.Background(), rdb, name)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestStoreValidationAndTenancy(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	tests := []struct {
		name string
		in   ChannelInput
		want string // substring of the error; "" for success
	}{
		{name: "webhook", in: ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/x"}},
		{name: "http webhook", in: ChannelInput{Type: TypeWebhook, URL: "http://hooks.example.com/x"}},
		{name: "slack", in: ChannelInput{Type: TypeSlack, URL: "https://hooks.slack.com/services/T/B/C"}},
		{name: "email", in: ChannelInput{Type: TypeEmail, To: []string{"a@example.com", "b@example.org"}}},
		{name: "no type", in: ChannelInput{URL: "https://x.example"}, want: `"type" is required`},
		{name: "bad type", in: ChannelInput{Type: "sms"}, want: `"type" must be`},
		{name: "ftp url", in: ChannelInput{Type: TypeWebhook, URL: "ftp://x.example/"}, want: `"url" must be an absolute http or https URL`},
		{name: "relative url", in: ChannelInput{Type: TypeWebhook, URL: "/hook"}, want: `"url" must be`},
		{name: "credentials in url", in: ChannelInput{Type: TypeWebhook, URL: "https://u:p@x.example/"}, want: "credentials"},
		{name: "no url", in: ChannelInput{Type: TypeSlack}, want: `"url" is required`},
		{name: "short secret", in: ChannelInput{Type: TypeWebhook, URL: "https://x.example", Secret: ptr("short")}, want: `"secret" must be 16 to 256`},
		{name: "slack secret", in: ChannelInput{Type: TypeSlack, URL: "https://x.example", Secret: ptr("0123456789abcdef")}, want: "webhook channels only"},
		{name: "bad severity", in: ChannelInput{Type: TypeWebhook, URL: "https://x.example", MinSeverity: "high"}, want: `"min_severity"`},
		{name: "email without to", in: ChannelInput{Type: TypeEmail}, want: "1 to 20"},
		{name: "email with 21", in: ChannelInput{Type: TypeEmail, To: strings.Split(strings.Repeat("a@example.com,", 21), ",")[:21]}, want: "1 to 20"},
		{name: "email bad address", in: ChannelInput{Type: TypeEmail, To: []string{"Bob <b@example.com>"}}, want: "bare email address"},
		{name: "email twice", in: ChannelInput{Type: TypeEmail, To: []string{"a@example.com", "A@example.com"}}, want: "listed twice"},
		{name: "email with url", in: ChannelInput{Type: TypeEmail, To: []string{"a@example.com"}, URL: "https://x.example"}, want: `"url" is for`},
		{name: "long name", in: ChannelInput{Type: TypeWebhook, URL: "https://x.example", Name: strings.Repeat("n", 101)}, want: `"name"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.store.Create(ctx, "t1", tc.in)
			var ie *InvalidError
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.want != "" && (!errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an InvalidError with %q", err, tc.want)
			}
		})
	}

	ch := e.channel("t1", ChannelInput{Type: TypeWebhook, URL: "https://x.example", Secret: ptr("0123456789abcdef-secret")})
	if _, err := e.store.Get(ctx, "t2", ch.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("get by another tenant: got %v, want ErrNotFound", err)
	}
	if _, err := e.store.Update(ctx, "t2", ch.ID, ChannelInput{Type: TypeWebhook, URL: "https://y.example"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update by another tenant: got %v, want ErrNotFound", err)
	}
	if err := e.store.Delete(ctx, "t2", ch.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete by another tenant: got %v, want ErrNotFound", err)
	}
	if _, err := e.store.Update(ctx, "t1", ch.ID, ChannelInput{Type: TypeSlack, URL: "https://y.example"}); err == nil {
		t.Errorf("update changing the type: got nil, want an error")
	}
	// An update without "secret" keeps it; the secret opens; it is stored
	// sealed only.
	up, err := e.store.Update(ctx, "t1", ch.ID, ChannelInput{URL: "https://y.example", Name: "renamed"})
	if err != nil {
		t.Fatal(err)
	}
	opened, err := e.store.OpenSecret(ctx, up)
	if err != nil || opened.Secret != "0123456789abcdef-secret" || up.Name != "renamed" {
		t.Errorf("updated channel: got %+v %v, want the secret kept and the name changed", opened, err)
	}
	keys, _ := e.rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if typ, _ := e.rdb.Type(ctx, k).Result(); typ == "string" {
			if v, _ := e.rdb.Get(ctx, k).Result(); strings.Contains(v, "0123456789abcdef") {
				t.Errorf("redis %s holds the secret in clear", k)
			}
		}
	}
	for _, env := range streamEvents(t, e.rdb, events.ChannelUpdated) {
		var ev map[string]any
		if err := env.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		if ev["secret_set"] != true || ev["channel_id"] != ch.ID {
			t.Errorf("updated event: got %v, want secret_set true", ev)
		}
	}
	// Without a passphrase a secret is refused.
	bare, err := New(Config{}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Create(ctx, "t1", ChannelInput{Type: TypeWebhook, URL: "https://x.example", Secret: ptr("0123456789abcdef")}); !errors.Is(err, ErrNoPassphrase) {
		t.Errorf("secret without passphrase: got %v, want ErrNoPassphrase", err)
	}
	// Another passphrase cannot open it.
	wrong, _ := New(Config{Passphrase: "another passphrase!"}, e.rdb, testenv.Logger(t))
	if _, err := wrong.OpenSecret(ctx, up); err == nil {
		t.Errorf("open with another passphrase: got nil, want an error")
	}
	list, err := e.store.List(ctx, "t1")
	if err != nil || len(list) != 5 || !slices.ContainsFunc(list, func(c Channel) bool { return c.ID == ch.ID }) {
		t.Errorf("list: got %d channels %v, want 5 with %s", len(list), err, ch.ID)
	}
	if err := e.store.Delete(ctx, "t1", ch.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Get(ctx, "t1", ch.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after delete: got %v, want ErrNotFound", err)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/services/..."},
		{"https://hooks.example.com/in?token=abc", "https://hooks.example.com/in"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080/"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, pass, file, want string
		wantErr                bool
	}{
		{name: "flag wins", pass: "from the flag!", file: write("a", "from the file\n"), want: "from the flag!"},
		{name: "first line of the file", file: write("b", "from the file\r\nsecond\n"), want: "from the file"},
		{name: "neither", want: ""},
		{name: "empty first line", file: write("c", "\nx\n"), wantErr: true},
		{name: "missing file", file: filepath.Join(dir, "none"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Passphrase(tc.pass, tc.file)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestEnqueueTest: a test request is one event naming the delivery the
// store answered with, and only for a channel of the tenant.
func TestEnqueueTest(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	ch := e.channel("t1", ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/x"})
	gone := e.channel("t1", ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/y"})
	if err := e.store.Delete(ctx, "t1", gone.ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, tenant, id string
		wantErr          error
	}{
		{name: "own channel", tenant: "t1", id: ch.ID},
		{name: "another tenant's channel", tenant: "t2", id: ch.ID, wantErr: ErrNotFound},
		{name: "deleted channel", tenant: "t1", id: gone.ID, wantErr: ErrNotFound},
		{name: "not a channel id", tenant: "t1", id: "notify:due", wantErr: ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(streamEvents(t, e.rdb, events.ChannelTestRequested))
			did, err := e.store.EnqueueTest(ctx, tc.tenant, tc.id)
			evs := streamEvents(t, e.rdb, events.ChannelTestRequested)[before:]
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || len(evs) != 0 {
					t.Errorf("got %q %v and %d events, want %v and none", did, err, len(evs), tc.wantErr)
				}
				return
			}
			if err != nil || len(evs) != 1 {
				t.Fatalf("got %v and %d events, want one event", err, len(evs))
			}
			ev := evs[0]
			var p events.ChannelTestRequestedV1
			if err := ev.Decode(&p); err != nil {
				t.Fatal(err)
			}
			want := DeliveryID(ev.EventID.String(), tc.id)
			if did != want || p.DeliveryID != did || p.ChannelID != tc.id || ev.AggregateID != tc.id || ev.TenantID != tc.tenant {
				t.Errorf("got delivery %s and event %+v %+v, want delivery %s of channel %s for %s", did, ev, p, want, tc.id, tc.tenant)
			}
		})
	}
}

// TestKeysUnchanged pins the Redis layout the channels had in the
// notifier, so that moving the code moved no data.
func TestKeys(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	ch := e.channel("t1", ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/x", Secret: ptr("0123456789abcdef-secret")})
	e.rdb.LPush(ctx, "notify:channel:"+events.TenantTag("t1")+":"+ch.ID+":attempts", `{"delivery_id":"dl_1","attempt":1,"status":"delivered"}`)
	tag := events.TenantTag("t1")
	for _, k := range []string{"notify:channel:" + tag + ":" + ch.ID, "notify:tenant:" + tag + ":t1:channels", "notify:seal:salt"} {
		if n := e.rdb.Exists(ctx, k).Val(); n != 1 {
			t.Errorf("key %s: got %d, want it written", k, n)
		}
	}
	got, err := e.store.Attempts(ctx, "t1", ch.ID, 10)
	if err != nil || len(got) != 1 || got[0].DeliveryID != "dl_1" {
		t.Errorf("attempts: got %+v %v, want the one at notify:channel:{tNN}:<id>:attempts", got, err)
	}
	if _, err := e.store.Attempts(ctx, "t2", ch.ID, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("attempts of another tenant's channel: got %v, want ErrNotFound", err)
	}
}

func TestChannelQuota(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	st, err := New(Config{Quotas: quota.Limits{quota.Channels: 1}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	in := ChannelInput{Type: TypeEmail, Name: "ops", To: []string{"ops@example.com"}}
	if _, err := st.Create(ctx, "t1", in); err != nil {
		t.Fatal(err)
	}
	var ex *quota.Exceeded
	if _, err := st.Create(ctx, "t1", in); !errors.As(err, &ex) || ex.Resource != quota.Channels || ex.Limit != 1 {
		t.Fatalf("second channel with quota 1: got %v, want quota.Exceeded{channels, 1}", err)
	}
	// Another tenant has its own count; an override raises one tenant's.
	if _, err := st.Create(ctx, "t2", in); err != nil {
		t.Fatalf("other tenant's first channel: %v", err)
	}
	if err := quota.Set(ctx, rdb, "t1", quota.Limits{quota.Channels: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, "t1", in); err != nil {
		t.Fatalf("second channel with override 2: %v", err)
	}
}

func TestLiteralTargetsRefused(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	st, err := New(Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"169.254.169.254", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.1", "[fd00:ec2::254]",
		"0.0.0.0", "127.0.0.1:8123", "2130706433", "127.1", "0x7f.1"} {
		for _, typ := range []string{TypeWebhook, TypeSlack} {
			_, err := st.Create(ctx, "t1", ChannelInput{Type: typ, URL: "http://" + host + "/hook"})
			var ie *InvalidError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), "--allow-webhook-targets") {
				t.Errorf("%s to %s: got %v, want a refusal naming --allow-webhook-targets", typ, host, err)
			}
		}
	}
	if n, _ := rdb.Exists(ctx, tenantChannelsKey("t1")).Result(); n != 0 {
		t.Fatalf("refused channels left an index")
	}
	// A name passes (its addresses are judged at send); an allowed range passes.
	if _, err := st.Create(ctx, "t1", ChannelInput{Type: TypeWebhook, URL: "http://localhost:9/hook"}); err != nil {
		t.Fatalf("name: %v", err)
	}
	allow, _ := guard.ParseAllow([]string{"127.0.0.0/8"})
	open, err := New(Config{Targets: guard.Policy{Allow: allow}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open.Create(ctx, "t1", ChannelInput{Type: TypeWebhook, URL: "http://127.0.0.1:9/hook"}); err != nil {
		t.Fatalf("allowed loopback: %v", err)
	}
	// An update is checked the same way.
	ch, err := st.Create(ctx, "t2", ChannelInput{Type: TypeWebhook, URL: "https://hooks.example.com/x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, "t2", ch.ID, ChannelInput{URL: "http://[::1]/x"}); err == nil {
		t.Fatal("update to ::1: got nil, want a refusal")
	}
}
