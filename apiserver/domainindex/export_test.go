package domainindex

// WithPlan forces q's plan: "read" (the smallest filter's members,
// sorted), "walk" (the sort's index, filtered) or "semi" (the sort's
// index, kept when among the filters' matches).
func WithPlan(q Query, plan string) Query {
	q.plan = plan
	return q
}

// DecodeCursor is decodeCursor, for the fuzz target.
var DecodeCursor = decodeCursor
