package httpapi

import (
	"bytes"
	"html/template"
	"net/http"

	"github.com/gin-gonic/gin"
)

// LinkPage answers page executed with data: the HTML page a mailed link
// opens (a claim's approval, a recipient's confirmation). Its one form
// posts back to the page's own address, nothing else loads, no other site
// may frame it, and the token in its address goes into no Referer and no
// cache. A template that fails fails the request.
func LinkPage(c *gin.Context, page *template.Template, data any) {
	var buf bytes.Buffer
	if err := page.Execute(&buf, data); err != nil {
		Fail(c, err)
		return
	}
	hdr := c.Writer.Header()
	hdr.Set("Content-Security-Policy", "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-store")
	c.Data(http.StatusOK, "text/html; charset=utf-8", buf.Bytes())
}
