package keychest

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
		{Name: "KeyChestError", Type: reflect.TypeFor[errorBody](), Required: false},
		{Name: "ClaimResponse", Type: reflect.TypeFor[claimResponse](), Required: false},
		{Name: "AddServerResponse", Type: reflect.TypeFor[addResponse](), Required: false},
		{Name: "ExpirationResponse", Type: reflect.TypeFor[expirationResponse](), Required: false},
		{Name: "ExpirationResult", Type: reflect.TypeFor[expirationResult](), Required: false},
		{Name: "ConfirmResponse", Type: reflect.TypeFor[confirmResponse](), Required: false},
	})
}
