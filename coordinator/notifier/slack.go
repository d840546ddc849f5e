package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// slackMaxMessages is how many messages one Slack post shows (Slack takes
// at most 50 blocks; each message uses two).
const slackMaxMessages = 20

// slackSender posts to a Slack incoming webhook: "text" is the
// notification's fallback, "blocks" the formatted message.
type slackSender struct {
	client  *http.Client
	maxResp int64
}

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Fields   []slackText `json:"fields,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

// SlackPayload is what certfleet POSTs to a Slack incoming webhook.
type SlackPayload struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

func (s *slackSender) Send(ctx context.Context, ch Channel, msgs []Message) error {
	body, err := json.Marshal(slackPayload(msgs))
	if err != nil {
		return fmt.Errorf("encode slack payload: %w", err)
	}
	return postJSON(ctx, s.client, ch.URL, body, nil, s.maxResp)
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func severityEmoji(m Message) string {
	switch {
	case m.Status == StatusResolved:
		return ":white_check_mark:"
	case m.Status == StatusTest:
		return ":wave:"
	case m.Severity == SeverityCritical:
		return ":red_circle:"
	case m.Severity == SeverityWarning:
		return ":warning:"
	}
	return ":information_source:"
}

// headline is a message's one-line summary, shared by every renderer.
func headline(m Message) string {
	prefix := "[" + strings.ToUpper(m.Severity) + "]"
	switch m.Status {
	case StatusResolved:
		prefix = "[RESOLVED]"
	case StatusTest:
		prefix = "[TEST]"
	}
	return prefix + " " + m.Title
}

func slackPayload(msgs []Message) SlackPayload {
	var p SlackPayload
	shown := msgs
	if len(shown) > slackMaxMessages {
		shown = shown[:slackMaxMessages]
	}
	if len(msgs) == 1 {
		p.Text = headline(msgs[0])
	} else {
		p.Text = fmt.Sprintf("certfleet: %d alerts", len(msgs))
		p.Blocks = append(p.Blocks, slackBlock{Type: "header", Text: &slackText{Type: "plain_text", Text: p.Text}})
	}
	for _, m := range shown {
		text := fmt.Sprintf("%s *%s*\n%s", severityEmoji(m), slackEscape.Replace(headline(m)), slackEscape.Replace(m.Text))
		fields := []slackText{
			{Type: "mrkdwn", Text: "*Domain*\n" + slackEscape.Replace(m.Hostname)},
			{Type: "mrkdwn", Text: "*Alert*\n" + slackEscape.Replace(m.Kind)},
		}
		if len(m.IPs) > 0 {
			fields = append(fields, slackText{Type: "mrkdwn", Text: "*IPs*\n" + slackEscape.Replace(strings.Join(m.IPs, ", "))})
		}
		if len(m.Regions) > 0 {
			fields = append(fields, slackText{Type: "mrkdwn", Text: "*Regions*\n" + slackEscape.Replace(strings.Join(m.Regions, ", "))})
		}
		p.Blocks = append(p.Blocks, slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: text}, Fields: fields})
		ctxEls := []slackText{{Type: "mrkdwn", Text: "Triggered " + m.TriggeredAt.UTC().Format("2006-01-02 15:04 UTC")}}
		if m.ResolvedAt != nil {
			ctxEls = append(ctxEls, slackText{Type: "mrkdwn", Text: "Resolved " + m.ResolvedAt.UTC().Format("2006-01-02 15:04 UTC")})
		}
		for _, l := range m.Links {
			ctxEls = append(ctxEls, slackText{Type: "mrkdwn", Text: fmt.Sprintf("<%s|%s>", slackEscape.Replace(l.URL), slackEscape.Replace(l.Title))})
		}
		p.Blocks = append(p.Blocks, slackBlock{Type: "context", Elements: ctxEls})
	}
	if len(msgs) > len(shown) {
		p.Blocks = append(p.Blocks, slackBlock{Type: "context", Elements: []slackText{
			{Type: "mrkdwn", Text: fmt.Sprintf("…and %d more", len(msgs)-len(shown))}}})
	}
	return p
}
