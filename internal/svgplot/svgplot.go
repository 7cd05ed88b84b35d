// Package svgplot draws the line plots of the benchmarks (docs/*.svg) as
// plain SVG: a frame with a title, two axes, labelled grid lines, curves
// and a legend. Only what the benchmarks need; no dependency.
package svgplot

import (
	"fmt"
	"strings"
)

// Plot is an SVG of W×H pixels whose plot area leaves the margins L, R,
// Top and Bot free for labels.
type Plot struct {
	W, H, L, R, Top, Bot float64
	sb                   strings.Builder
}

// New starts a plot: the white background, the title and the two axes.
func New(w, h, l, r, top, bot float64, title string) *Plot {
	p := &Plot{W: w, H: h, L: l, R: r, Top: top, Bot: bot}
	p.Printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	p.Printf(`<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="20">%s</text>`+"\n", l, title)
	p.Printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n",
		l, h-bot, w-r, h-bot, l, top, l, h-bot)
	return p
}

// Printf adds raw SVG.
func (p *Plot) Printf(format string, a ...any) { fmt.Fprintf(&p.sb, format, a...) }

// HGrid draws a horizontal grid line at pixel height y, labelled at the
// left margin's x.
func (p *Plot) HGrid(y, x float64, label string) {
	p.Printf(`<text x="%.0f" y="%.0f">%s</text><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#ddd"/>`+"\n", x, y+4, label, p.L, y, p.W-p.R, y)
}

// Polyline draws one curve through the points, given as "x,y" pixels.
func (p *Plot) Polyline(color string, pts []string) {
	p.Printf(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
}

// Bytes ends the SVG and returns it.
func (p *Plot) Bytes() []byte {
	p.sb.WriteString("</svg>\n")
	return []byte(p.sb.String())
}
