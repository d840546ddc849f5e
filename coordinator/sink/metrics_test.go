package sink

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// RowsTotal and BatchErrorsTotal read the counters for the external tests.
func RowsTotal() float64        { return counterValue(rowsTotal) }
func BatchErrorsTotal() float64 { return counterValue(batchErrors) }

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// AuditRowsTotal reads certfleet_sink_audit_rows_total.
func AuditRowsTotal() float64 { return counterValue(auditRowsTotal) }
