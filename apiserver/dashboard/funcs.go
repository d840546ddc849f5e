package dashboard

import (
	"fmt"
	"html/template"
	"net/url"
	"time"

	"github.com/certfleet/certfleet/apiserver/grade"
)

// funcs are the helpers every template may call:
//
//	asset "style.css"        the asset's URL, versioned
//	when t                   a time as "2006-01-02 15:04 UTC" ("never" when zero or nil)
//	ago t                    how long ago t was, roughly ("3m ago")
//	days t                   whole days from now until t (negative once past)
//	str p / num p            a *string / *int, "" / "-" when nil
//	link path k v k v ...    path with the query k=v (empty values left out)
//	statusClass s            the CSS class of a grade status ("st-expired")
func (d *Dashboard) funcs() template.FuncMap {
	return template.FuncMap{
		"asset": func(name string) string { return "/assets/" + name + "?v=" + d.assetVer },
		"when":  when,
		"ago": func(t any) string {
			tt, ok := timeOf(t)
			if !ok {
				return "never"
			}
			return ago(d.cfg.Now().Sub(tt))
		},
		"days": func(t any) int {
			tt, _ := timeOf(t)
			return grade.DaysUntil(tt, d.cfg.Now())
		},
		"str": func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		},
		"num": func(p *int) string {
			if p == nil {
				return "-"
			}
			return fmt.Sprint(*p)
		},
		"link":        link,
		"statusClass": func(s any) string { return "st-" + fmt.Sprint(deref(s)) },
	}
}

func deref(v any) any {
	if p, ok := v.(*string); ok {
		if p == nil {
			return "none"
		}
		return *p
	}
	return v
}

func timeOf(t any) (time.Time, bool) {
	switch v := t.(type) {
	case time.Time:
		return v, !v.IsZero()
	case *time.Time:
		if v == nil {
			return time.Time{}, false
		}
		return *v, !v.IsZero()
	}
	return time.Time{}, false
}

func when(t any) string {
	tt, ok := timeOf(t)
	if !ok {
		return "never"
	}
	return tt.UTC().Format("2006-01-02 15:04 UTC")
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// link is path with the query of the key-value pairs kv; empty values are
// left out.
func link(path string, kv ...any) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if v := fmt.Sprint(kv[i+1]); v != "" {
			q.Set(fmt.Sprint(kv[i]), v)
		}
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}
