// Command architecture draws docs/architecture.svg, the picture on the README: clients, the
// floating IP, the HAProxy pair, and three Mosquitto brokers each with its agent, the agents in a
// full mesh. The picture is code so that it changes with the design and a test keeps the
// committed file equal to what this program draws.
//
// Usage: go run ./scripts/cmd/architecture > docs/architecture.svg
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	if _, err := io.WriteString(os.Stdout, draw()); err != nil {
		fmt.Fprintln(os.Stderr, "architecture:", err)
		os.Exit(1)
	}
}

// canvas collects SVG elements.
type canvas struct{ b strings.Builder }

func (c *canvas) box(x, y, w, h int, fill, title, sub string) {
	fmt.Fprintf(&c.b, `<rect x="%d" y="%d" width="%d" height="%d" rx="8" fill="%s" stroke="#333"/>`+"\n", x, y, w, h, fill)
	ty := y + h/2 + 5
	if sub != "" {
		ty = y + h/2 - 3
		fmt.Fprintf(&c.b, `<text x="%d" y="%d" class="sub">%s</text>`+"\n", x+w/2, y+h/2+14, sub)
	}
	fmt.Fprintf(&c.b, `<text x="%d" y="%d" class="title">%s</text>`+"\n", x+w/2, ty, title)
}

func (c *canvas) line(x1, y1, x2, y2 int, class string) {
	fmt.Fprintf(&c.b, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="%s"/>`+"\n", x1, y1, x2, y2, class)
}

func (c *canvas) text(x, y int, class, s string) {
	fmt.Fprintf(&c.b, `<text x="%d" y="%d" class="%s">%s</text>`+"\n", x, y, class, s)
}

const (
	width  = 760
	height = 520
)

// draw returns the whole SVG document.
func draw() string {
	var c canvas
	fmt.Fprintf(&c.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n", width, height, width, height)
	c.b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>
<style>
.title{font-size:14px;font-weight:bold;text-anchor:middle}
.sub{font-size:11px;text-anchor:middle;fill:#444}
.note{font-size:11px;fill:#444}
.left{font-size:11px;fill:#444;text-anchor:end}
.mid{font-size:11px;fill:#444;text-anchor:middle}
.mqtt{stroke:#333;stroke-width:1.5;marker-end:url(#arrow)}
.vrrp{stroke:#b36b00;stroke-width:1.5;stroke-dasharray:4 3}
.mesh{stroke:#1f6fb2;stroke-width:2;stroke-dasharray:6 3;marker-start:url(#arrow);marker-end:url(#arrow)}
.log{stroke:#2e7d32;stroke-width:1.5;marker-end:url(#arrow)}
</style>
<rect width="100%" height="100%" fill="#fff"/>
`)
	// Clients and the floating IP.
	c.box(280, 15, 200, 40, "#eeeeee", "MQTT clients", "")
	c.box(290, 85, 180, 40, "#fff3d6", "VIP (keepalived VRRP)", "")
	c.line(380, 55, 380, 83, "mqtt")
	// The HAProxy pair.
	lbs := []struct {
		x     int
		title string
	}{{150, "lb1: HAProxy"}, {430, "lb2: HAProxy"}}
	for _, lb := range lbs {
		c.box(lb.x, 160, 180, 50, "#fff3d6", lb.title, "MQTT check, client-id hash")
		c.line(380, 125, lb.x+90, 158, "mqtt")
	}
	c.line(330, 185, 430, 185, "vrrp")
	c.text(345, 178, "note", "VRRPv3")
	// Brokers and agents.
	xs := []int{40, 290, 540}
	for i, x := range xs {
		name := fmt.Sprintf("b%d", i+1)
		c.box(x, 270, 180, 50, "#e3f0fb", "mosquitto "+name, "unmodified 2.0.x")
		c.box(x, 395, 180, 50, "#e6f4e6", "agent "+name, "mosquitto-ha agent")
		for _, lb := range lbs {
			c.line(lb.x+90, 210, x+90, 268, "mqtt")
		}
		c.line(x+60, 320, x+60, 393, "log")
		c.line(x+120, 393, x+120, 322, "mqtt")
	}
	c.text(xs[0]+55, 352, "left", "$SYS log,")
	c.text(xs[0]+55, 366, "left", "publishes")
	c.text(xs[0]+125, 360, "note", "republish")
	// The full mesh between agents: each relays to the peer brokers only what their clients want.
	c.line(xs[0]+180, 420, xs[1]-2, 420, "mesh")
	c.line(xs[1]+180, 420, xs[2]-2, 420, "mesh")
	c.b.WriteString(fmt.Sprintf(`<path d="M%d,445 C%d,500 %d,500 %d,445" fill="none" class="mesh"/>`+"\n", xs[0]+90, xs[0]+200, xs[2]-20, xs[2]+90))
	c.text(width/2, 512, "mid", "full mesh: interest as retained messages, relays of only the publishes a peer's clients want, one hop")
	c.b.WriteString("</svg>\n")
	return c.b.String()
}
