package dashboard

import (
	"fmt"
	"math"
	"strings"
)

// Charts are inline SVG drawn on the server: Go computes the geometry,
// the "barchart" and "linechart" templates (layout.html) draw it. Each
// chart has a title and a description for screen readers, and its
// numbers are in a table beside it too.

// Bar is one bar of a bar chart.
type Bar struct {
	Label string
	Value float64
	// Class colours the bar (CSS), e.g. "bad" for expired.
	Class string
}

// BarChart is a bar chart's geometry.
type BarChart struct {
	Title, Desc   string
	Width, Height int
	Bars          []PlacedBar
	Max           float64
	BaseY         float64
}

// PlacedBar is a bar where it is drawn.
type PlacedBar struct {
	Bar
	X, Y, W, H float64
	LabelX     float64
	ValueY     float64
}

const (
	chartW, chartH = 720, 220
	chartPadTop    = 20
	chartPadBottom = 36
	chartPadSide   = 8
)

// barChart lays bars out in a chart of the standard size.
func barChart(title, desc string, bars []Bar) BarChart {
	c := BarChart{Title: title, Desc: desc, Width: chartW, Height: chartH, BaseY: chartH - chartPadBottom}
	for _, b := range bars {
		c.Max = math.Max(c.Max, b.Value)
	}
	if len(bars) == 0 {
		return c
	}
	slot := float64(chartW-2*chartPadSide) / float64(len(bars))
	plot := float64(chartH - chartPadTop - chartPadBottom)
	for i, b := range bars {
		h := 0.0
		if c.Max > 0 {
			h = plot * b.Value / c.Max
		}
		x := chartPadSide + slot*float64(i)
		c.Bars = append(c.Bars, PlacedBar{Bar: b, X: x + slot*0.15, W: slot * 0.7, Y: c.BaseY - h, H: h,
			LabelX: x + slot/2, ValueY: c.BaseY - h - 4})
	}
	return c
}

// Point is one point of a line chart's series: X in any unit (seconds
// since an epoch, say), Y the value.
type Point struct {
	X, Y  float64
	Label string
}

// Series is one line of a line chart.
type Series struct {
	Name   string
	Class  string
	Points []Point
}

// LineChart is a line chart's geometry.
type LineChart struct {
	Title, Desc   string
	Width, Height int
	Lines         []PlacedSeries
	YMax          float64
	BaseY         float64
	// XLabels are a few labels along the X axis.
	XLabels []AxisLabel
	YLabels []AxisLabel
}

// PlacedSeries is a series as drawn: its polyline's points and dots.
type PlacedSeries struct {
	Name, Class string
	Path        string
	Dots        []PlacedPoint
}

// PlacedPoint is a point where it is drawn.
type PlacedPoint struct {
	X, Y  float64
	Label string
}

// AxisLabel is a label at a position on an axis.
type AxisLabel struct {
	Pos  float64
	Text string
}

// lineChart lays series out over a shared X range and a Y range from 0;
// xLabel names an X value on the axis.
func lineChart(title, desc string, series []Series, xLabel func(float64) string) LineChart {
	const padLeft = 44
	c := LineChart{Title: title, Desc: desc, Width: chartW, Height: chartH, BaseY: chartH - chartPadBottom}
	xMin, xMax := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			xMin, xMax = math.Min(xMin, p.X), math.Max(xMax, p.X)
			c.YMax = math.Max(c.YMax, p.Y)
		}
	}
	if math.IsInf(xMin, 1) {
		return c
	}
	if xMax == xMin {
		xMin, xMax = xMin-1, xMax+1
	}
	if c.YMax == 0 {
		c.YMax = 1
	}
	plotW := float64(chartW - padLeft - chartPadSide)
	plotH := float64(chartH - chartPadTop - chartPadBottom)
	px := func(x float64) float64 { return padLeft + plotW*(x-xMin)/(xMax-xMin) }
	py := func(y float64) float64 { return c.BaseY - plotH*y/c.YMax }
	for _, s := range series {
		ps := PlacedSeries{Name: s.Name, Class: s.Class}
		var b strings.Builder
		for i, p := range s.Points {
			x, y := px(p.X), py(p.Y)
			if i == 0 {
				fmt.Fprintf(&b, "M%.1f %.1f", x, y)
			} else {
				fmt.Fprintf(&b, " L%.1f %.1f", x, y)
			}
			ps.Dots = append(ps.Dots, PlacedPoint{X: x, Y: y, Label: p.Label})
		}
		ps.Path = b.String()
		c.Lines = append(c.Lines, ps)
	}
	for i := range 4 {
		x := xMin + (xMax-xMin)*float64(i)/3
		c.XLabels = append(c.XLabels, AxisLabel{Pos: px(x), Text: xLabel(x)})
		y := c.YMax * float64(i) / 3
		c.YLabels = append(c.YLabels, AxisLabel{Pos: py(y), Text: fmt.Sprintf("%.0f", y)})
	}
	return c
}
