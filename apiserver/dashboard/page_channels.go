package dashboard

import (
	"slices"
	"strings"

	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/internal/channels"
)

// channelsPage is /channels: where the tenant's alerts go (the store
// behind /api/v1/channels): list with each channel's latest deliveries,
// add, delete, and send a test message (POST /api/v1/channels/{id}/test:
// the notifier sends it and its attempt shows here); an email channel's
// pending recipients are marked, each with a button mailing its
// confirmation link again (POST /api/v1/channels/{id}/confirmations).
func (d *Dashboard) channelsPage() Page {
	return Page{Path: "/channels", Title: "Channels", Nav: "Channels", Template: "channels.html", Get: d.channels,
		Actions: []Action{
			{Path: "/channels/add", Do: d.addChannel},
			{Path: "/channels/:id/delete", Do: d.deleteChannel},
			{Path: "/channels/:id/test", Do: d.testChannel, Classes: []string{v1.ClassChannelTests}},
			{Path: "/channels/:id/confirmations", Do: d.requestConfirmation, Classes: []string{v1.ClassChannelTests}},
		}}
}

// channelAttempts is how many of each channel's latest attempts show.
const channelAttempts = 5

type channelRow struct {
	channels.Channel
	Attempts []channels.Attempt
	// Recipients are To, each with whether it is pending.
	Recipients []recipientRow
}

type recipientRow struct {
	Address string
	Pending bool
}

type channelsData struct {
	Channels       []channelRow
	Types          []string
	Severities     []string
	SecretsEnabled bool
}

func (d *Dashboard) channels(r *Request) (any, error) {
	list, err := d.deps.Channels.List(r.Ctx(), r.Tenant())
	if err != nil {
		return nil, err
	}
	out := channelsData{Types: []string{channels.TypeWebhook, channels.TypeSlack, channels.TypeEmail},
		Severities: []string{"info", "warning", "critical"}, SecretsEnabled: d.deps.Channels.SecretsEnabled()}
	pending, err := d.deps.Channels.Pending(r.Ctx(), r.Tenant(), list...)
	if err != nil {
		return nil, err
	}
	for i, ch := range list {
		at, err := d.deps.Channels.Attempts(r.Ctx(), r.Tenant(), ch.ID, channelAttempts)
		if err != nil {
			return nil, err
		}
		row := channelRow{Channel: ch.Shown(r.CanWrite()), Attempts: at}
		for _, a := range ch.To {
			row.Recipients = append(row.Recipients, recipientRow{Address: a, Pending: slices.Contains(pending[i], a)})
		}
		out.Channels = append(out.Channels, row)
	}
	return out, nil
}

// addChannel is POST /channels/add, as POST /api/v1/channels.
func (d *Dashboard) addChannel(r *Request) (string, error) {
	in := channels.ChannelInput{Type: r.PostForm("type"), Name: strings.TrimSpace(r.PostForm("name")),
		URL: strings.TrimSpace(r.PostForm("url")), MinSeverity: r.PostForm("min_severity"), Digest: r.PostForm("digest") == "on"}
	if secret := r.PostForm("secret"); secret != "" {
		in.Secret = &secret
	}
	for _, to := range strings.FieldsFunc(r.PostForm("to"), func(c rune) bool { return c == ',' || c == ' ' || c == '\n' || c == '\r' }) {
		in.To = append(in.To, to)
	}
	ch, err := d.deps.Channels.Create(r.Ctx(), r.Tenant(), in)
	if err != nil {
		return "/channels", err
	}
	r.Flash(FlashInfo, "Channel added: "+ch.Name)
	return "/channels", nil
}

// deleteChannel is POST /channels/:id/delete.
func (d *Dashboard) deleteChannel(r *Request) (string, error) {
	if err := d.deps.Channels.Delete(r.Ctx(), r.Tenant(), r.Param("id")); err != nil {
		return "/channels", err
	}
	r.Flash(FlashInfo, "Channel deleted")
	return "/channels", nil
}

// testChannel is POST /channels/:id/test.
func (d *Dashboard) testChannel(r *Request) (string, error) {
	id, err := d.deps.Channels.EnqueueTest(r.Ctx(), r.Tenant(), r.Param("id"))
	if err != nil {
		return "/channels", err
	}
	r.Flash(FlashInfo, "Test notification queued (delivery "+id+"): its attempt shows below once sent")
	return "/channels", nil
}

// requestConfirmation is POST /channels/:id/confirmations, as POST
// /api/v1/channels/{id}/confirmations.
func (d *Dashboard) requestConfirmation(r *Request) (string, error) {
	addr := r.PostForm("address")
	if err := d.deps.Channels.RequestConfirmation(r.Ctx(), r.Tenant(), r.Param("id"), addr); err != nil {
		return "/channels", err
	}
	r.Flash(FlashInfo, "Confirmation email queued for "+addr)
	return "/channels", nil
}
