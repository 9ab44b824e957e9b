// Command chart draws the reference experiment of scripts/bench-reference.sh as a PNG: end-to-end
// throughput and bytes between the brokers for the three setups (one broker, the native bridge,
// mosquitto-ha), with the floor of bytes that had to cross. It uses the standard library only and
// a built-in 5x7 bitmap font.
//
//	go run ./scripts/cmd/chart -in docs/bench/reference.json -out docs/bench/reference.png \
//	    [-relay docs/bench/relay-qos1.json]
//
// -relay adds the loopback A->B measurement of scripts/bench-relay.sh to the throughput panel.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

func main() {
	in := flag.String("in", "docs/bench/reference.json", "JSON written by scripts/bench-reference.sh --json")
	relay := flag.String("relay", "", "optional JSON of scripts/bench-relay.sh --json (QoS 1) for a loopback group")
	out := flag.String("out", "docs/bench/reference.png", "PNG to write")
	flag.Parse()
	if err := run(*in, *relay, *out); err != nil {
		fmt.Fprintf(os.Stderr, "chart: %v\n", err)
		os.Exit(1)
	}
}

// reference is the part of bench-reference.sh's JSON the chart needs.
type reference struct {
	Params struct {
		Runs       int  `json:"runs"`
		Smoke      bool `json:"smoke"`
		Publishers int  `json:"publishers"`
		Count      int  `json:"count"`
		Size       int  `json:"size"`
	} `json:"params"`
	Environment map[string]any                       `json:"environment"`
	Median      map[string]map[string]map[string]any `json:"median"`
}

// relayRun is the part of bench-relay.sh's JSON the chart needs.
type relayRun struct {
	Params struct {
		QoS int `json:"qos"`
	} `json:"params"`
	Median map[string]map[string]any `json:"median"`
}

// bar is one bar of a group; floor bars are drawn as outlines.
type bar struct {
	label string
	value float64
	col   color.RGBA
	floor bool
}

type group struct {
	title string
	bars  []bar
}

var (
	white     = color.RGBA{255, 255, 255, 255}
	black     = color.RGBA{20, 20, 20, 255}
	grid      = color.RGBA{225, 225, 225, 255}
	colSingle = color.RGBA{150, 150, 150, 255}
	colNative = color.RGBA{230, 140, 40, 255}
	colHA     = color.RGBA{40, 110, 200, 255}
	colFloor  = color.RGBA{40, 150, 70, 255}
)

var setups = []struct {
	key, label string
	col        color.RGBA
}{
	{"single", "ONE BROKER", colSingle},
	{"native", "NATIVE BRIDGE", colNative},
	{"ha", "MOSQUITTO-HA", colHA},
}

func run(in, relayPath, out string) error {
	var ref reference
	if err := readJSON(in, &ref); err != nil {
		return err
	}
	num := func(w, s, k string) (float64, bool) {
		v, ok := ref.Median[w][s][k].(float64)
		return v, ok
	}

	// Panel 1: deliveries per second.
	var tp []group
	for _, w := range []struct{ key, title string }{
		{"reference-qos1", "LAB QOS 1"},
		{"reference-qos0", "LAB QOS 0"},
		{"wildcard", "LAB WILDCARD, 3 BROKERS"},
	} {
		g := group{title: w.title}
		for _, s := range setups {
			if v, ok := num(w.key, s.key, "delivery_rate"); ok {
				g.bars = append(g.bars, bar{label: s.label, value: v, col: s.col})
			}
		}
		if len(g.bars) > 0 {
			tp = append(tp, g)
		}
	}
	if relayPath != "" {
		var rr relayRun
		if err := readJSON(relayPath, &rr); err != nil {
			return err
		}
		g := group{title: fmt.Sprintf("LOOPBACK A TO B QOS %d (BENCH-RELAY)", rr.Params.QoS)}
		for _, s := range setups {
			if v, ok := rr.Median["throughput/"+s.key]["delivery_rate"].(float64); ok {
				g.bars = append(g.bars, bar{label: s.label, value: v, col: s.col})
			}
		}
		if len(g.bars) > 0 {
			tp = append(tp, g)
		}
	}

	// Panel 2: bytes between the brokers (setup and publish phases) and the floor.
	var by []group
	for _, w := range []struct{ key, title string }{
		{"reference-qos0", "REFERENCE QOS 0"},
		{"reference-qos1", "REFERENCE QOS 1"},
		{"local", "NO REMOTE SUBSCRIBER"},
		{"wildcard", "WILDCARD, 3 BROKERS"},
	} {
		g := group{title: w.title}
		for _, s := range setups[1:] {
			if v, ok := num(w.key, s.key, "bytes_run"); ok {
				g.bars = append(g.bars, bar{label: s.label, value: v / 1e6, col: s.col})
			}
		}
		if v, ok := num(w.key, "ha", "floor_bytes"); ok && len(g.bars) > 0 {
			g.bars = append(g.bars, bar{label: "FLOOR", value: v / 1e6, col: colFloor, floor: true})
		}
		if len(g.bars) > 0 {
			by = append(by, g)
		}
	}
	if len(tp) == 0 || len(by) == 0 {
		return fmt.Errorf("%s has no medians for reference-qos1/qos0 (is it bench-reference.sh --json output?)", in)
	}

	const W, H = 1200, 860
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	fill(img, img.Bounds(), white)

	title := fmt.Sprintf("MOSQUITTO REFERENCE EXPERIMENT: %d PUBLISHERS X %d X %d B, MEDIANS OF %d RUNS",
		ref.Params.Publishers, ref.Params.Count, ref.Params.Size, ref.Params.Runs)
	if ref.Params.Smoke {
		title += " (SMOKE)"
	}
	text(img, 20, 14, title, black, 2)
	sub := ""
	if c, ok := ref.Environment["cpus"].(float64); ok {
		sub = fmt.Sprintf("%d CORES", int(c))
	}
	if k, ok := ref.Environment["kernel"].(string); ok {
		sub += ", LINUX " + k
	}
	if m, ok := ref.Environment["mosquitto"].(string); ok {
		sub += ", " + m
	}
	text(img, 20, 38, sub, black, 1)

	legendX := 20
	for _, s := range setups {
		fill(img, image.Rect(legendX, 56, legendX+14, 70), s.col)
		text(img, legendX+20, 59, s.label, black, 1)
		legendX += 30 + 6*len(s.label)
	}
	outline(img, image.Rect(legendX, 56, legendX+14, 70), colFloor, 2)
	text(img, legendX+20, 59, "FLOOR OF THE MOSQUITTO-HA RUNS: ONE MQTT PUBLISH PER MESSAGE AND BROKER THAT WANTS IT", black, 1)

	panel(img, image.Rect(20, 90, W-20, 470), "END-TO-END DELIVERIES PER SECOND", tp, "%.0f")
	panel(img, image.Rect(20, 490, W-20, H-10), "MB BETWEEN THE BROKER HOSTS (NFTABLES, IP BYTES, SUBSCRIBE + PUBLISH PHASES)", by, "%.2f")

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}

// panel draws a titled bar chart of groups inside r, with a scale from 0 to a round maximum.
func panel(img *image.RGBA, r image.Rectangle, title string, groups []group, format string) {
	text(img, r.Min.X, r.Min.Y, title, black, 2)
	maxV := 0.0
	nbars := 0
	for _, g := range groups {
		for _, b := range g.bars {
			maxV = math.Max(maxV, b.value)
			nbars++
		}
	}
	top := niceCeil(maxV)
	plot := image.Rect(r.Min.X+70, r.Min.Y+30, r.Max.X-10, r.Max.Y-50)
	// grid and axis labels
	for i := 0; i <= 4; i++ {
		y := plot.Max.Y - i*plot.Dy()/4
		fill(img, image.Rect(plot.Min.X, y, plot.Max.X, y+1), grid)
		lab := trimNum(fmt.Sprintf(format, top*float64(i)/4))
		text(img, plot.Min.X-8-6*len(lab), y-3, lab, black, 1)
	}
	fill(img, image.Rect(plot.Min.X, plot.Min.Y, plot.Min.X+1, plot.Max.Y+1), black)
	fill(img, image.Rect(plot.Min.X, plot.Max.Y, plot.Max.X, plot.Max.Y+1), black)

	gap := 30
	slots := nbars + len(groups) - 1 // one empty slot between groups
	bw := (plot.Dx() - 2*gap) / max(slots, 1)
	bw = min(bw, 120)
	x := plot.Min.X + gap
	for gi, g := range groups {
		gx := x
		for _, b := range g.bars {
			h := 0
			if top > 0 {
				h = int(math.Round(b.value / top * float64(plot.Dy())))
			}
			br := image.Rect(x+6, plot.Max.Y-h, x+bw-6, plot.Max.Y)
			if b.floor {
				outline(img, br, b.col, 3)
			} else {
				fill(img, br, b.col)
			}
			v := trimNum(fmt.Sprintf(format, b.value))
			text(img, x+bw/2-3*len(v), plot.Max.Y-h-12, v, black, 1)
			x += bw
		}
		// group title centred under its bars
		w := x - gx
		text(img, gx+w/2-3*len(g.title), plot.Max.Y+10, g.title, black, 1)
		if gi < len(groups)-1 {
			x += bw
		}
	}
}

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// trimNum turns 2.50 into 2.5 and 3.00 into 3 (integers stay as they are).
func trimNum(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func outline(img *image.RGBA, r image.Rectangle, c color.RGBA, w int) {
	fill(img, image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+w), c)
	fill(img, image.Rect(r.Min.X, r.Max.Y-w, r.Max.X, r.Max.Y), c)
	fill(img, image.Rect(r.Min.X, r.Min.Y, r.Min.X+w, r.Max.Y), c)
	fill(img, image.Rect(r.Max.X-w, r.Min.Y, r.Max.X, r.Max.Y), c)
}

// text draws s with the 5x7 font at scale (each glyph cell is 6x9 pixels times scale). Lower case
// is drawn as upper case; characters without a glyph are drawn as a small box.
func text(img *image.RGBA, x, y int, s string, c color.RGBA, scale int) {
	for _, ch := range strings.ToUpper(s) {
		g, ok := font[ch]
		if !ok {
			g = font['?']
		}
		for row, bits := range g {
			for col := 0; col < 5; col++ {
				if bits[col] == '#' {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 6 * scale
	}
}

// font is a 5x7 bitmap font: seven rows of five columns, '#' set.
var font = map[rune][7]string{
	' ':  {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'?':  {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."},
	'.':  {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',':  {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	':':  {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'-':  {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'+':  {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'/':  {"....#", "...#.", "...#.", "..#..", ".#...", ".#...", "#...."},
	'(':  {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')':  {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'%':  {"##..#", "##..#", "...#.", "..#..", ".#...", "#..##", "#..##"},
	'=':  {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'>':  {"#....", ".#...", "..#..", "...#.", "..#..", ".#...", "#...."},
	'<':  {"....#", "...#.", "..#..", ".#...", "..#..", "...#.", "....#"},
	'_':  {".....", ".....", ".....", ".....", ".....", ".....", "#####"},
	'\'': {"..#..", "..#..", ".#...", ".....", ".....", ".....", "....."},
	'0':  {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1':  {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2':  {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3':  {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	'4':  {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5':  {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6':  {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7':  {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8':  {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9':  {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'A':  {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B':  {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C':  {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D':  {"###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."},
	'E':  {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F':  {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G':  {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H':  {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I':  {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J':  {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K':  {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L':  {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M':  {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N':  {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O':  {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P':  {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q':  {".###.", "#...#", "#...#", "#...#", "#.#.#", ".###.", "...##"},
	'R':  {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S':  {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T':  {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U':  {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V':  {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W':  {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X':  {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y':  {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z':  {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
}
