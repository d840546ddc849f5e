package health

import dto "github.com/prometheus/client_model/go"

// ClockOffsetValue is certfleet_clock_offset_seconds's value.
func ClockOffsetValue() float64 {
	var m dto.Metric
	_ = clockOffset.Write(&m)
	return m.GetGauge().GetValue()
}
