package httpapi

import (
	"fmt"
	"strconv"

	"github.com/gin-gonic/gin"
)

// PageParam reads the paging parameter name (page, per_page, limit) from
// the query: def when absent, else a whole number from 1 to maxVal (no
// upper bound when maxVal is 0). A bad value is a BadRequest naming the
// parameter, its range and the value. Every paged route reads its
// parameters through it.
func PageParam(c *gin.Context, name string, def, maxVal int) (int, error) {
	v, ok := c.GetQuery(name)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || (maxVal > 0 && n > maxVal) {
		if maxVal > 0 {
			return 0, BadRequest(fmt.Sprintf("%s must be a whole number from 1 to %d, got %q", name, maxVal, v))
		}
		return 0, BadRequest(fmt.Sprintf("%s must be a whole number of at least 1, got %q", name, v))
	}
	return n, nil
}
