package main

import (
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/coordinator/notifier"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

// notifyOptions are the notification flags.
type notifyOptions struct {
	SecretsPassphrase     string
	SecretsPassphraseFile string
	Notifier              bool
	NotifyMaxAttempts     int
	NotifyBackoff         time.Duration
	NotifyMaxBackoff      time.Duration
	NotifyWorkers         int
	NotifyTenantSends     int
	ConfirmMailsTenant    int
	ConfirmMailsAddress   int
	NotifyTimeout         time.Duration
	DigestHour            int
	SMTPAddr              string
	SMTPFrom              string
	SMTPUsername          string
	SMTPPassword          string
	SMTPStartTLS          string
	SMTPExtraRoots        string
	SMTPTimeout           time.Duration
}

// notify registers the notification flags: the secrets passphrase on
// every role that has channels, the delivery settings on the roles that
// run the notifier (coordinator, all).
func (f *flagSet) notify() *flagSet {
	defer f.group("notifications")()
	f.StringVar(&f.opts.SecretsPassphrase, "secrets-passphrase", "", "passphrase sealing webhook secrets, at least 12 characters, the same on every apiserver and coordinator (prefer the environment CERTFLEET_SECRETS_PASSPHRASE or --secrets-passphrase-file); empty: channels with a secret are refused")
	f.StringVar(&f.opts.SecretsPassphraseFile, "secrets-passphrase-file", "", "file whose first line is the secrets passphrase")
	// The API refuses channels naming a refused IP literal; the notifier
	// refuses every address outside the list when it sends.
	f.StringVar(&f.opts.AllowWebhookTargets, "allow-webhook-targets", "", "comma-separated CIDRs webhook and Slack URLs may reach although private or loopback (the same on every apiserver and coordinator)")
	if f.Name() == "certfleet apiserver" {
		return f
	}
	f.BoolVar(&f.opts.Notifier, "notifier", true, "run the notifier: deliver alerts to the tenants' channels")
	f.IntVar(&f.opts.NotifyMaxAttempts, "notify-max-attempts", 8, "attempts of one delivery before it gives up (notification.failed.v1)")
	f.DurationVar(&f.opts.NotifyBackoff, "notify-backoff", time.Second, "pause after a delivery's first failed attempt; doubles after each failure")
	f.DurationVar(&f.opts.NotifyMaxBackoff, "notify-max-backoff", 5*time.Minute, "longest pause between two attempts of a delivery")
	f.IntVar(&f.opts.NotifyWorkers, "notify-workers", 4, "deliveries this notifier sends at once")
	f.IntVar(&f.opts.NotifyTenantSends, "notify-tenant-sends", 1, "deliveries of one tenant sent at once over every notifier (the same on every coordinator): a tenant whose receivers hang holds at most this many workers")
	f.IntVar(&f.opts.ConfirmMailsTenant, "rate-limit-confirm-mails-tenant", notifier.DefaultConfirmPerTenant.Rate, "recipient confirmation mails an hour per tenant, over every notifier; past it a confirmation waits for the channel's next update or a resend")
	f.IntVar(&f.opts.ConfirmMailsAddress, "rate-limit-confirm-mails-address", notifier.DefaultConfirmPerAddress.Rate, "recipient confirmation mails a day per address, whatever the tenants asking: the address's owner is mailed at most this often")
	f.DurationVar(&f.opts.NotifyTimeout, "notify-timeout", 10*time.Second, "time limit of one webhook or Slack send (connect, TLS, answer)")
	if f.Name() == "certfleet coordinator" {
		// all and apiserver have it from ca() (flags_ca.go); the notifier
		// uses it for links in messages.
		f.StringVar(&f.opts.PublicURL, "public-url", "", "base URL of the API, for links in notifications (empty: no links)")
	}
	f.IntVar(&f.opts.DigestHour, "digest-hour", 8, "UTC hour (0-23) at which digest channels get their daily message")
	// Email (coordinator/notifier/email.go).
	f.StringVar(&f.opts.SMTPAddr, "smtp-addr", "", "SMTP relay host:port for email channels; empty: email deliveries fail, saying so")
	f.StringVar(&f.opts.SMTPFrom, "smtp-from", "", "envelope sender and From header of alert emails")
	f.StringVar(&f.opts.SMTPUsername, "smtp-username", "", "AUTH PLAIN user (only ever sent over TLS); empty: no AUTH")
	f.StringVar(&f.opts.SMTPPassword, "smtp-password", "", "AUTH PLAIN password (prefer the environment CERTFLEET_SMTP_PASSWORD)")
	f.StringVar(&f.opts.SMTPStartTLS, "smtp-starttls", notifier.StartTLSRequired, "STARTTLS to the relay: required, opportunistic or off")
	f.StringVar(&f.opts.SMTPExtraRoots, "smtp-extra-roots", "", "PEM file of roots trusted for the relay's certificate besides the system pool")
	f.DurationVar(&f.opts.SMTPTimeout, "smtp-timeout", 30*time.Second, "time limit of one SMTP conversation")
	return f
}

// notifyConfig is the apiserver's part of the notification settings.
func (o *options) notifyConfig() (apiserver.NotifyConfig, error) {
	allow, err := parseAllow("--allow-webhook-targets", o.AllowWebhookTargets)
	if err != nil {
		return apiserver.NotifyConfig{}, err
	}
	dnsAllow, err := parseAllow("--allow-dns-targets", o.AllowDNSTargets)
	if err != nil {
		return apiserver.NotifyConfig{}, err
	}
	return apiserver.NotifyConfig{SecretsPassphrase: o.SecretsPassphrase, SecretsPassphraseFile: o.SecretsPassphraseFile,
		Targets: allow, DNSTargets: dnsAllow, KeyType: o.ACMEKeyType}, nil
}

// addNotifier adds the notifier to gr when role runs it.
func addNotifier(gr *group, role string, o *options, rdb redis.UniversalClient, logger *zap.Logger) error {
	if (role != "coordinator" && role != "all") || !o.Notifier {
		return nil
	}
	pass, err := channels.Passphrase(o.SecretsPassphrase, o.SecretsPassphraseFile)
	if err != nil {
		return err
	}
	allow, err := parseAllow("--allow-webhook-targets", o.AllowWebhookTargets)
	if err != nil {
		return err
	}
	var roots []byte
	if o.SMTPExtraRoots != "" {
		if roots, err = os.ReadFile(o.SMTPExtraRoots); err != nil {
			return fmt.Errorf("--smtp-extra-roots: %w", err)
		}
	}
	n, err := notifier.New(notifier.Config{
		Consumer: o.Name, ClaimIdle: o.ClaimIdle, Allow: allow, Passphrase: pass, PublicURL: o.PublicURL,
		MaxAttempts: o.NotifyMaxAttempts, Backoff: o.NotifyBackoff, MaxBackoff: o.NotifyMaxBackoff,
		ConfirmPerTenant:  ratelimit.Limit{Rate: o.ConfirmMailsTenant, Period: notifier.DefaultConfirmPerTenant.Period},
		ConfirmPerAddress: ratelimit.Limit{Rate: o.ConfirmMailsAddress, Period: notifier.DefaultConfirmPerAddress.Period},
		Workers:           o.NotifyWorkers, TenantSends: o.NotifyTenantSends, Timeout: o.NotifyTimeout, DigestHour: o.DigestHour, Wait: o.RedisWait,
		SMTP: notifier.SMTPConfig{
			Addr: o.SMTPAddr, From: o.SMTPFrom, Username: o.SMTPUsername, Password: o.SMTPPassword,
			StartTLS: o.SMTPStartTLS, ExtraRootsPEM: roots, Timeout: o.SMTPTimeout,
		},
	}, rdb, logger)
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	gr.register(n)
	if err := n.RegisterMetrics(roleRegisterer); err != nil {
		return err
	}
	gr.add(n.Run)
	return nil
}
