// cli.go is the command line every subcommand shares: usage and --help, --version, the exit
// codes, the common flags and their errors, and the logger.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
)

// Exit codes, also listed by --help and docs/cli.md. A unit can stop restarting on
// exitUsage: running again with the same flags and file fails the same way.
const (
	exitOK    = 0 // done; for check and status: everything is healthy
	exitFail  = 1 // a runtime failure: a broker unreachable or refusing, the agent stopped by an error, a node unhealthy
	exitUsage = 2 // a usage or configuration error: unknown flag or command, an argument, an invalid cluster file
)

const exitCodesHelp = `exit codes:
  0  success (check, status: everything healthy)
  1  runtime failure: a broker unreachable or refusing the agent, an unhealthy node,
     the agent stopped by an error
  2  usage or configuration error: unknown command or flag, unexpected argument,
     invalid or unreadable cluster file (running again the same way fails the same way)
`

// Set by packaged builds: go build -ldflags "-X main.version=1.2.3 -X main.commit=abc123".
// Empty: taken from the module and VCS information Go stamps into the binary.
var version, commit string

// buildVersion says which build this is: version, commit (with "-modified" for a dirty tree)
// and the Go release.
func buildVersion() (ver, rev, goVersion string) {
	ver, rev = version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if ver == "" {
			ver = bi.Main.Version
		}
		if rev == "" {
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if rev != "" && modified {
				rev += "-modified"
			}
		}
	}
	if ver == "" {
		ver = "(devel)"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev, runtime.Version()
}

// writeBuildInfo renders the build as Prometheus' usual info metric.
func writeBuildInfo(w io.Writer) {
	v, c, g := buildVersion()
	fmt.Fprintf(w, "# HELP mosquitto_ha_build_info The version, commit and Go release of the agent (value 1).\n# TYPE mosquitto_ha_build_info gauge\nmosquitto_ha_build_info{version=%q,commit=%q,goversion=%q} 1\n", v, c, g)
}

// shortVersion names the build in a status message: the version and the commit's first 12
// digits, unless the version already names that commit (a package built between tags).
func shortVersion() string {
	v, c, _ := buildVersion()
	short, modified := strings.CutSuffix(c, "-modified")
	if len(short) > 12 {
		short = short[:12]
	}
	if strings.Contains(v, short) {
		return v
	}
	if modified {
		short += "-modified"
	}
	return v + " " + short
}

func versionLine() string {
	v, c, g := buildVersion()
	return fmt.Sprintf("mosquitto-ha %s (commit %s, %s)", v, c, g)
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: mosquitto-ha <command> [--config cluster.yaml] [flags]\n       mosquitto-ha --version | --help\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n`mosquitto-ha <command> --help` lists the command's flags.\n\n", exitCodesHelp)
}

// helpRequested reports whether args ask for help the way pflag reads them (before "--").
func helpRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "--help":
			return true
		}
	}
	return false
}

// flags is the flag set every command starts from.
type flags struct {
	fs       *pflag.FlagSet
	config   string
	node     string
	logLevel string
	logFmt   string
}

// newFlags starts the flags of command name; its usage and errors go to out (run passes
// stdout when help was asked for, so that --help prints there).
func newFlags(name string, out io.Writer) *flags {
	f := &flags{fs: pflag.NewFlagSet(name, pflag.ContinueOnError)}
	f.fs.SetOutput(out)
	f.fs.StringVarP(&f.config, "config", "c", "/etc/mosquitto-ha/cluster.yaml", "cluster file")
	f.fs.Usage = func() {
		summary := ""
		for _, c := range commands() {
			if c.name == name {
				summary = c.summary
			}
		}
		fmt.Fprintf(f.fs.Output(), "usage: mosquitto-ha %s [flags]\n\n%s\n\nflags:\n%s\n%s", name, summary, f.fs.FlagUsages(), exitCodesHelp)
	}
	return f
}

// addLogFlags adds --log-level and --log-format.
func (f *flags) addLogFlags() {
	f.fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	f.fs.StringVar(&f.logFmt, "log-format", "text", "text (logfmt) or json")
}

// parse reads the flags and the cluster file. A nil Config comes with the exit code: exitOK
// after --help, exitUsage for a flag, an argument or the file.
func (f *flags) parse(args []string, stderr io.Writer) (*Config, int) {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, exitOK // pflag has printed the usage
		}
		return nil, f.usageError(stderr, err.Error())
	}
	if f.fs.NArg() > 0 {
		return nil, f.usageError(stderr, fmt.Sprintf("unexpected argument %q (the cluster file is given with --config %s)", f.fs.Arg(0), f.fs.Arg(0)))
	}
	cfg, err := LoadConfig(f.config)
	if err != nil {
		fmt.Fprintf(stderr, "mosquitto-ha: %s: %v\n", f.config, err)
		return nil, exitUsage
	}
	return cfg, exitOK
}

// usageError prints a flag or argument error and the command's usage to stderr.
func (f *flags) usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "mosquitto-ha %s: %s\n\n", f.fs.Name(), msg)
	f.fs.SetOutput(stderr)
	f.fs.Usage()
	return exitUsage
}

// newLogger builds the one logger of the agent.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
