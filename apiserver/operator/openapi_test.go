package operator

import (
	"reflect"
	"testing"

	"github.com/certfleet/certfleet/apiserver/openapi"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestOpenAPISchemasMatchTypes keeps the documented body true to the type.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	testenv.CheckSchemas(t, openapi.Document, []testenv.Schema{
		{Name: "TenantDeletion", Type: reflect.TypeFor[Report](), Required: true},
	})
}
