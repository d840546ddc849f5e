package v1

import (
	"reflect"
	"testing"

	"github.com/certfleet/certfleet/apiserver/openapi"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestOpenAPISchemasMatchTypes keeps the documented bodies of this API
// true to the types it reads and writes.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	testenv.CheckSchemas(t, openapi.Document, []testenv.Schema{
		{Name: "Error", Type: reflect.TypeFor[errorBody](), Required: false},
		{Name: "DomainTaken", Type: reflect.TypeFor[existingBody](), Required: true},
		{Name: "APIKeyExists", Type: reflect.TypeFor[existingBody](), Required: true},
		{Name: "Domain", Type: reflect.TypeFor[Domain](), Required: false},
		{Name: "DomainList", Type: reflect.TypeFor[DomainList](), Required: false},
		{Name: "Pagination", Type: reflect.TypeFor[Pagination](), Required: false},
		{Name: "DomainCreate", Type: reflect.TypeFor[createDomainRequest](), Required: false},
		{Name: "BulkImport", Type: reflect.TypeFor[bulkAnswer](), Required: false},
		{Name: "BulkResult", Type: reflect.TypeFor[bulkResult](), Required: false},
		{Name: "DomainUpdate", Type: reflect.TypeFor[updateDomainRequest](), Required: false},
		{Name: "SSLCheck", Type: reflect.TypeFor[SSLCheck](), Required: false},
		{Name: "SSLResult", Type: reflect.TypeFor[SSLResult](), Required: false},
		{Name: "CheckRequest", Type: reflect.TypeFor[checkRequest](), Required: false},
		{Name: "CheckResult", Type: reflect.TypeFor[checkBody](), Required: false},
		{Name: "CheckTimeout", Type: reflect.TypeFor[checkBody](), Required: false},
		{Name: "APIKey", Type: reflect.TypeFor[apiKeyJSON](), Required: false},
		{Name: "APIKeyCreated", Type: reflect.TypeFor[apiKeyJSON](), Required: false},
		{Name: "APIKeyCreate", Type: reflect.TypeFor[createKeyRequest](), Required: false},
		{Name: "Alert", Type: reflect.TypeFor[alertJSON](), Required: false},
		{Name: "AlertList", Type: reflect.TypeFor[alertList](), Required: false},
		{Name: "AlertSettings", Type: reflect.TypeFor[alertSettingsJSON](), Required: false},
		{Name: "AlertSettingsUpdate", Type: reflect.TypeFor[alertSettingsUpdate](), Required: false},
		{Name: "Channel", Type: reflect.TypeFor[channelJSON](), Required: false},
		{Name: "ChannelAttempt", Type: reflect.TypeFor[channels.Attempt](), Required: false},
		{Name: "ChannelConfirmationRequest", Type: reflect.TypeFor[confirmationRequest](), Required: false},
		{Name: "RecipientConfirmed", Type: reflect.TypeFor[recipientConfirmed](), Required: true},
		{Name: "Quota", Type: reflect.TypeFor[quotaJSON](), Required: false},
		{Name: "WhoisHistory", Type: reflect.TypeFor[whoisHistory](), Required: true},
		{Name: "WhoisHistoryEntry", Type: reflect.TypeFor[WhoisHistoryEntry](), Required: true},
		{Name: "ScanHistory", Type: reflect.TypeFor[ScanHistoryPage](), Required: true},
		{Name: "HistoryEntry", Type: reflect.TypeFor[HistoryEntry](), Required: true},
		{Name: "CertificateTimeline", Type: reflect.TypeFor[CertificateTimeline](), Required: true},
		{Name: "CertificateEntry", Type: reflect.TypeFor[CertificateEntry](), Required: true},
		{Name: "Sighting", Type: reflect.TypeFor[Sighting](), Required: true},
		{Name: "Stats", Type: reflect.TypeFor[Stats](), Required: true},
		{Name: "StatsCount", Type: reflect.TypeFor[StatsCount](), Required: true},
		{Name: "ExpiryWeek", Type: reflect.TypeFor[ExpiryWeek](), Required: true},
		{Name: "ExpiryPlanner", Type: reflect.TypeFor[ExpiryPlanner](), Required: true},
		{Name: "RegionStats", Type: reflect.TypeFor[RegionStats](), Required: true},
		{Name: "AlertCounts", Type: reflect.TypeFor[AlertCounts](), Required: true},
	})
}
