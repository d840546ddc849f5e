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

// MaxOffset is the deepest item a list serves: a page whose first item
// lies beyond it is refused (400), so that no page number, however large,
// overflows an offset. A page past the end of a list (within the cap) is
// an empty page, as usual.
const MaxOffset = 10_000_000

// Paging reads page (default 1) and per_page (default defPerPage, at most
// maxPerPage) and checks that the page starts within MaxOffset.
func Paging(c *gin.Context, defPerPage, maxPerPage int) (page, perPage int, err error) {
	if page, err = PageParam(c, "page", 1, 0); err != nil {
		return 0, 0, err
	}
	if perPage, err = PageParam(c, "per_page", defPerPage, maxPerPage); err != nil {
		return 0, 0, err
	}
	if int64(page-1) > MaxOffset/int64(perPage) {
		return 0, 0, BadRequest(fmt.Sprintf("(page - 1) × per_page must be at most %d, the deepest item a list serves; narrow the list with a filter instead", MaxOffset))
	}
	return page, perPage, nil
}
