package managedcert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// putAccountScript saves a DNS account and records its event. KEYS: the
// account hash, the tenant's account set, the events stream. ARGV: record
// JSON, sealed credentials, set member, the most accounts a tenant keeps,
// maxlen, then the event's fields.
var putAccountScript = redis.NewScript(`
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 'full'
end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'sealed_creds', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
return 'ok'
`)

// deleteAccountScript removes a DNS account and records its event. KEYS:
// the account hash, the tenant's account set, the events stream. ARGV: set
// member, maxlen, then the event's fields.
var deleteAccountScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 'ok'
`)

func accountMember(provider, accountID string) string { return provider + ":" + accountID }

// PutDNSAccount creates or replaces tenant's DNS provider account: the
// credentials are checked (CheckCredentials against the DNS target
// policy), sealed, and never returned.
func (s *Store) PutDNSAccount(ctx context.Context, tenant, provider, accountID string, creds map[string]string) (DNSAccount, error) {
	if !accountIDPattern.MatchString(accountID) {
		return DNSAccount{}, invalid(`field "account_id": 1 to 64 letters, digits, ".", "_" or "-"`)
	}
	if len(creds) > MaxCredentials {
		return DNSAccount{}, invalid(`field "credentials": at most %d names`, MaxCredentials)
	}
	for name, v := range creds {
		if len(v) > MaxCredentialLen {
			return DNSAccount{}, invalid(`credential %q: at most %d bytes`, name, MaxCredentialLen)
		}
	}
	if err := CheckCredentials(provider, creds, s.cfg.DNSTargets); err != nil {
		return DNSAccount{}, &InvalidError{msg: err.Error()}
	}
	creds, err := Canonical(provider, creds)
	if err != nil {
		return DNSAccount{}, &InvalidError{msg: err.Error()}
	}
	box, err := s.sealBox(ctx)
	if err != nil {
		return DNSAccount{}, err
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	acct := DNSAccount{Tenant: tenant, Provider: provider, AccountID: accountID, CreatedAt: now, UpdatedAt: now}
	if prev, err := s.GetDNSAccount(ctx, tenant, provider, accountID); err == nil {
		acct.CreatedAt = prev.CreatedAt
	} else if !errors.Is(err, ErrNotFound) {
		return DNSAccount{}, err
	}
	for name := range creds {
		acct.CredentialNames = append(acct.CredentialNames, name)
	}
	sort.Strings(acct.CredentialNames)
	plain, err := json.Marshal(creds)
	if err != nil {
		return DNSAccount{}, fmt.Errorf("encode credentials: %w", err)
	}
	sealed, err := box.Seal(plain, credsAAD(tenant, provider, accountID))
	if err != nil {
		return DNSAccount{}, err
	}
	body, err := json.Marshal(acct)
	if err != nil {
		return DNSAccount{}, fmt.Errorf("encode account: %w", err)
	}
	fields, err := accountEvent(events.DNSAccountAdded, acct)
	if err != nil {
		return DNSAccount{}, err
	}
	args := append([]any{string(body), sealed, accountMember(provider, accountID), MaxDNSAccounts, s.cfg.MaxLen}, fields...)
	res, err := s.commands.RunScript(ctx, putAccountScript, []string{DNSAccountKey(tenant, provider, accountID),
		DNSAccountsKey(tenant), events.EventStream(tenant)}, args...).Text()
	if err != nil {
		return DNSAccount{}, fmt.Errorf("save DNS account %s/%s: %w", provider, accountID, err)
	}
	if res == "full" {
		return DNSAccount{}, invalid("at most %d DNS accounts per account; delete one first", MaxDNSAccounts)
	}
	s.logger.Info("dns account saved", zap.String("tenant_id", tenant), zap.String("provider", provider),
		zap.String("account_id", accountID), zap.Strings("credential_names", acct.CredentialNames))
	return acct, nil
}

func accountEvent(name string, a DNSAccount) ([]any, error) {
	ev, err := events.New(name, a.Tenant, accountMember(a.Provider, a.AccountID),
		events.DNSAccountV1{Provider: a.Provider, AccountID: a.AccountID, CredentialNames: a.CredentialNames})
	if err != nil {
		return nil, err
	}
	return ev.StreamFields()
}

// GetDNSAccount returns tenant's account without its credentials.
func (s *Store) GetDNSAccount(ctx context.Context, tenant, provider, accountID string) (DNSAccount, error) {
	a, _, err := s.readAccount(ctx, tenant, provider, accountID)
	return a, err
}

// OpenDNSAccount returns tenant's account with its credentials opened, for
// the worker building the provider. The credentials are checked again:
// the policy may have changed since they were saved.
func (s *Store) OpenDNSAccount(ctx context.Context, tenant, provider, accountID string) (DNSAccount, error) {
	a, sealed, err := s.readAccount(ctx, tenant, provider, accountID)
	if err != nil {
		return DNSAccount{}, err
	}
	box, err := s.sealBox(ctx)
	if err != nil {
		return DNSAccount{}, err
	}
	plain, err := box.Open(sealed, credsAAD(tenant, provider, accountID))
	if err != nil {
		return DNSAccount{}, fmt.Errorf("open credentials of DNS account %s/%s: %w", provider, accountID, err)
	}
	if err := json.Unmarshal(plain, &a.Credentials); err != nil {
		return DNSAccount{}, fmt.Errorf("decode credentials of DNS account %s/%s: %w", provider, accountID, err)
	}
	if err := CheckCredentials(provider, a.Credentials, s.cfg.DNSTargets); err != nil {
		return DNSAccount{}, fmt.Errorf("DNS account %s/%s: %w", provider, accountID, err)
	}
	return a, nil
}

func (s *Store) readAccount(ctx context.Context, tenant, provider, accountID string) (DNSAccount, string, error) {
	if !accountIDPattern.MatchString(accountID) || strings.Contains(provider, ":") {
		return DNSAccount{}, "", ErrNotFound
	}
	vals, err := s.rdb.HMGet(ctx, DNSAccountKey(tenant, provider, accountID), "rec", "sealed_creds").Result()
	if err != nil {
		return DNSAccount{}, "", fmt.Errorf("read DNS account %s/%s: %w", provider, accountID, err)
	}
	raw, ok := vals[0].(string)
	if !ok {
		return DNSAccount{}, "", ErrNotFound
	}
	sealed, _ := vals[1].(string)
	a, err := decodeAccount(raw, tenant)
	return a, sealed, err
}

func decodeAccount(raw, tenant string) (DNSAccount, error) {
	var a DNSAccount
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return DNSAccount{}, fmt.Errorf("decode DNS account: %w", err)
	}
	if a.Tenant != tenant {
		return DNSAccount{}, ErrNotFound
	}
	return a, nil
}

// ListDNSAccounts returns tenant's accounts without credentials, by
// provider and id.
func (s *Store) ListDNSAccounts(ctx context.Context, tenant string) ([]DNSAccount, error) {
	members, err := s.rdb.SMembers(ctx, DNSAccountsKey(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("list DNS accounts of %s: %w", tenant, err)
	}
	sort.Strings(members)
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, 0, len(members))
	for _, m := range members {
		provider, id, _ := strings.Cut(m, ":")
		cmds = append(cmds, pipe.HGet(ctx, DNSAccountKey(tenant, provider, id), "rec"))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read DNS accounts of %s: %w", tenant, err)
	}
	out := make([]DNSAccount, 0, len(cmds))
	for _, cmd := range cmds {
		raw, err := cmd.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		a, err := decodeAccount(raw, tenant)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// DeleteDNSAccount removes tenant's account; ErrInUse while one of its
// managed certificates names it (a certificate created concurrently fails
// its next order with a clear error on its record).
func (s *Store) DeleteDNSAccount(ctx context.Context, tenant, provider, accountID string) error {
	if _, _, err := s.readAccount(ctx, tenant, provider, accountID); err != nil {
		return err
	}
	for offset := 0; ; offset += MaxPageSize {
		page, _, err := s.List(ctx, tenant, offset, MaxPageSize)
		if err != nil {
			return err
		}
		for _, c := range page {
			if c.DNSProvider == provider && c.AccountID == accountID {
				return ErrInUse
			}
		}
		if len(page) < MaxPageSize {
			break
		}
	}
	fields, err := accountEvent(events.DNSAccountRemoved, DNSAccount{Tenant: tenant, Provider: provider, AccountID: accountID})
	if err != nil {
		return err
	}
	args := append([]any{accountMember(provider, accountID), s.cfg.MaxLen}, fields...)
	res, err := s.commands.RunScript(ctx, deleteAccountScript, []string{DNSAccountKey(tenant, provider, accountID),
		DNSAccountsKey(tenant), events.EventStream(tenant)}, args...).Text()
	if err != nil {
		return fmt.Errorf("delete DNS account %s/%s: %w", provider, accountID, err)
	}
	if res != "ok" {
		return ErrNotFound
	}
	return nil
}
