package events

import "sort"

// StreamFields returns StreamValues as a flat field, value, field, value...
// list in a fixed order: the form Lua scripts pass to XADD as arguments
// (redis.call('XADD', key, '*', unpack(ARGV, i, j))), so that no script
// names the wire fields itself.
func (e Envelope) StreamFields() ([]any, error) {
	values, err := e.StreamValues()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	fields := make([]any, 0, 2*len(values))
	for _, k := range names {
		fields = append(fields, k, values[k])
	}
	return fields, nil
}
