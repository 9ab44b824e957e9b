// reload.go applies SIGHUP: it re-reads the cluster file and decides, by comparing the running
// and the new Config field by field, which changed keys the running agent applies and which
// need a restart. A field says what a reload does with it in its `reload` struct tag; a field
// without one is restart-only, so a new setting is never reported as reloaded and silently
// ignored.
//
//	reload:"live"    applied by bridge.Agent.Reload (peers' addresses, limits)
//	reload:"unused"  not read by the agent (load_balancer, another node's local address)
//	reload:"nodes"   the node list: compared by name, see planReload
//	(none)           restart-only: a reload that changes it is refused and names the key
//
// Node tags describe another node (a peer); every field of the agent's own node is
// restart-only, since its own broker connection is made once.
package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"mosquitto-ha/bridge"
)

// What a reload does with a changed key.
const (
	reloadRestart = "restart"
	reloadLive    = "live"
	reloadUnused  = "unused"
	reloadNodes   = "nodes"
)

// reloadPlan lists the changed keys by what a reload does with them.
type reloadPlan struct {
	live, unused, restart []string
}

func (p *reloadPlan) add(class, key string) {
	switch class {
	case reloadLive:
		p.live = append(p.live, key)
	case reloadUnused:
		p.unused = append(p.unused, key)
	default:
		p.restart = append(p.restart, key)
	}
}

// loadedConfig is a cluster file with the digests of the files it names (password, secret,
// TLS), so that a reload notices a file whose contents changed under the same name.
type loadedConfig struct {
	*Config
	files map[string]fileDigest // by fileRef.id
}

type fileDigest struct {
	key, path string
	sum       [32]byte
}

func loadForReload(path string) (loadedConfig, error) {
	c, err := LoadConfig(path)
	if err != nil {
		return loadedConfig{}, err
	}
	return withDigests(c), nil
}

func withDigests(c *Config) loadedConfig {
	l := loadedConfig{Config: c, files: map[string]fileDigest{}}
	add := func(id, key, path string) {
		if path == "" {
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return // Validate has read it; a file gone since is noticed at the next reload
		}
		l.files[id] = fileDigest{key: key, path: path, sum: sha256.Sum256(b)}
	}
	addTLS := func(id, key string, t *TLSConfig) {
		if t != nil {
			add(id+".ca", key+".ca", t.CA)
			add(id+".cert", key+".cert", t.Cert)
			add(id+".key", key+".key", t.Key)
		}
	}
	add("agent.password_file", "agent.password_file", c.Agent.PasswordFile)
	add("agent.cluster_secret_file", "agent.cluster_secret_file", c.Agent.ClusterSecretFile)
	addTLS("agent.tls", "agent.tls", c.Agent.TLS)
	for i, n := range c.Nodes {
		addTLS("node "+n.Name+".tls", fmt.Sprintf("nodes[%d].tls", i), n.TLS)
	}
	return l
}

// planReload compares the running configuration with the next one as seen by node's agent.
func planReload(old, next loadedConfig, node string) (reloadPlan, error) {
	var plan reloadPlan
	if _, err := next.Node(node); err != nil {
		return plan, err
	}
	diffFields("", reflect.ValueOf(*old.Config), reflect.ValueOf(*next.Config), reloadRestart, true, &plan)

	oldNodes := map[string]Node{}
	for _, n := range old.Nodes {
		oldNodes[n.Name] = n
	}
	seen := map[string]bool{}
	for i, n := range next.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		seen[n.Name] = true
		o, existed := oldNodes[n.Name]
		switch {
		case !existed:
			plan.add(reloadLive, fmt.Sprintf("%s (%s added)", key, n.Name))
		case n.Name == node: // this agent's own broker: every change needs a restart
			diffFields(key, reflect.ValueOf(o), reflect.ValueOf(n), reloadRestart, false, &plan)
		default:
			diffFields(key, reflect.ValueOf(o), reflect.ValueOf(n), reloadRestart, true, &plan)
		}
	}
	for _, n := range old.Nodes {
		if !seen[n.Name] {
			plan.add(reloadLive, fmt.Sprintf("nodes (%s removed)", n.Name))
		}
	}

	// The same file name with new contents: the agent read the old contents at start.
	ids := slices.Sorted(maps.Keys(next.files))
	for _, id := range ids {
		nf := next.files[id]
		if of, ok := old.files[id]; ok && of.path == nf.path && of.sum != nf.sum {
			plan.add(reloadRestart, fmt.Sprintf("%s (contents of %s)", nf.key, nf.path))
		}
	}
	return plan, nil
}

// diffFields adds to plan every key under path whose value differs between a and b, in the
// class its tag gives (useTags) or class.
func diffFields(path string, a, b reflect.Value, class string, useTags bool, plan *reloadPlan) {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() && b.IsNil() {
			return
		}
		if a.IsNil() || b.IsNil() {
			plan.add(class, path)
			return
		}
		diffFields(path, a.Elem(), b.Elem(), class, useTags, plan)
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			f := a.Type().Field(i)
			key := yamlKey(f)
			if key == "" {
				continue
			}
			fc := reloadRestart
			if class == reloadUnused {
				fc = reloadUnused // nothing under an unused key is read
			}
			if tag := f.Tag.Get("reload"); tag != "" && useTags {
				fc = tag
			}
			if fc == reloadNodes {
				continue // planReload compares nodes by name
			}
			diffFields(join(path, key), a.Field(i), b.Field(i), fc, useTags, plan)
		}
	case reflect.Slice:
		if a.Type().Elem().Kind() == reflect.Struct && a.Len() == b.Len() {
			for i := 0; i < a.Len(); i++ {
				diffFields(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i), class, useTags, plan)
			}
			return
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			plan.add(class, path)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			plan.add(class, path)
		}
	}
}

// reloadState is the outcome of the last SIGHUP, for the metrics.
type reloadState struct {
	mu      sync.Mutex
	ok      bool      // the last reload was applied (true before the first)
	success time.Time // when the configuration in force was loaded
}

func newReloadState() *reloadState { return &reloadState{ok: true, success: time.Now()} }

func (r *reloadState) set(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ok = ok
	if ok {
		r.success = time.Now()
	}
}

// writeMetrics renders the reload state in the names Prometheus uses for its own.
func (r *reloadState) writeMetrics(w io.Writer) {
	r.mu.Lock()
	ok, success := r.ok, r.success
	r.mu.Unlock()
	v := 0
	if ok {
		v = 1
	}
	fmt.Fprintf(w, "# HELP mosquitto_ha_config_last_reload_successful 1 if the last SIGHUP was applied (or none came yet), 0 if it was refused.\n# TYPE mosquitto_ha_config_last_reload_successful gauge\nmosquitto_ha_config_last_reload_successful %d\n", v)
	fmt.Fprintf(w, "# HELP mosquitto_ha_config_last_reload_success_timestamp_seconds When the configuration in force was loaded, since the Unix epoch.\n# TYPE mosquitto_ha_config_last_reload_success_timestamp_seconds gauge\nmosquitto_ha_config_last_reload_success_timestamp_seconds %d\n", success.Unix())
}

// reloadOnHUP re-reads the cluster file on SIGHUP and applies what can change while running.
// An invalid file, or one that changes a key that needs a restart, keeps the running
// configuration, applies nothing, and names each such key.
func reloadOnHUP(ctx context.Context, path string, running loadedConfig, node string, a *bridge.Agent, state *reloadState, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		next, err := loadForReload(path)
		var plan reloadPlan
		if err == nil {
			plan, err = planReload(running, next, node)
		}
		var opts bridge.Options
		if err == nil && len(plan.restart) == 0 {
			opts, err = agentOptions(next.Config, node, log)
		}
		if err != nil {
			state.set(false)
			log.Error("reload refused: keeping the running configuration", "config", path, "err", err)
			continue
		}
		if len(plan.restart) > 0 {
			state.set(false)
			log.Error("reload refused: these keys need an agent restart; nothing applied, the running configuration is kept",
				"config", path, "restart", strings.Join(plan.restart, ", "))
			continue
		}
		a.Reload(opts.Peers, opts.Limits)
		state.set(true)
		running = next
		log.Info("configuration reloaded", "config", path, "applied", listOrNone(plan.live),
			"not_used_by_agent", listOrNone(plan.unused), "peers", len(opts.Peers))
	}
}

func listOrNone(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(keys, ", ")
}
