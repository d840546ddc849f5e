package audit

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
		{Name: "AuditEntry", Type: reflect.TypeFor[auditEntry](), Required: false},
		{Name: "AuditList", Type: reflect.TypeFor[auditList](), Required: false},
	})
}
