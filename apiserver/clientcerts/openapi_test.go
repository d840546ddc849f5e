package clientcerts

import (
	"reflect"
	"testing"

	"github.com/certfleet/certfleet/apiserver/openapi"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestOpenAPISchemasMatchTypes keeps the documented bodies of this API
// true to the types it reads and writes.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	testenv.CheckSchemas(t, openapi.Document, []testenv.Schema{
		{Name: "CRLInfo", Type: reflect.TypeFor[CRLInfo](), Required: false},
		{Name: "OCSPStatus", Type: reflect.TypeFor[OCSPStatus](), Required: false},
		{Name: "ClientCertError", Type: reflect.TypeFor[errorBody](), Required: true},
		{Name: "ClientCertRateLimitedBody", Type: reflect.TypeFor[rateLimitedBody](), Required: true},
		{Name: "ClientCertCreate", Type: reflect.TypeFor[cmCreateRequest](), Required: false},
		{Name: "ClientCertCreated", Type: reflect.TypeFor[cmCreated](), Required: true},
		{Name: "ClientCertListItem", Type: reflect.TypeFor[cmListItem](), Required: true},
		{Name: "ClientCertList", Type: reflect.TypeFor[cmList](), Required: true},
		{Name: "ClientCertDetail", Type: reflect.TypeFor[cmDetail](), Required: true},
		{Name: "ClientCertRevocation", Type: reflect.TypeFor[cmRevocation](), Required: true},
		{Name: "ClientCertRenewal", Type: reflect.TypeFor[cmRenewal](), Required: true},
		{Name: "ClientCertRevoke", Type: reflect.TypeFor[cmRevokeRequest](), Required: false},
		{Name: "ClientCertRevoked", Type: reflect.TypeFor[cmRevoked](), Required: true},
		{Name: "ClientCertStats", Type: reflect.TypeFor[cmStats](), Required: true},
		{Name: "ClientCertBatch", Type: reflect.TypeFor[cmBatchRequest](), Required: false},
		{Name: "ClientCertBatchCreated", Type: reflect.TypeFor[cmBatchCreated](), Required: true},
		{Name: "ClientCertBatchError", Type: reflect.TypeFor[cmBatchError](), Required: true},
		{Name: "ClientCertBatchResult", Type: reflect.TypeFor[cmBatchResult](), Required: true},
	})
}
