package v1

import "github.com/certfleet/certfleet/apiserver/httpapi"

// ErrorStyle is how the v1 API answers errors; the dashboard explains the
// errors of the same calls with it (Style.Explain).
func ErrorStyle() httpapi.Style { return style }
