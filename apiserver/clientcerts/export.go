package clientcerts

import "github.com/certfleet/certfleet/apiserver/httpapi"

// ErrorStyle is how CertMate's APIs (client certificates, CRL, OCSP
// status, managed certificates, audit) answer errors; the server answers
// unknown paths and methods under them with it too.
func ErrorStyle() httpapi.Style { return style }
