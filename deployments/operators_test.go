package deployments

// Checks of the operator files: the Kubernetes manifest and the systemd
// unit. The manifest is decoded strictly into the fields of the Kubernetes
// API it uses, so a misspelt field fails, and its parts are checked against
// each other and against the relay configuration it carries. (kubectl's
// --dry-run=client needs an API server even for that, so it is not used.)
// The unit is parsed, and verified by systemd-analyze when it is installed.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"gopkg.in/yaml.v3"
)

const (
	kubernetesPath = "kubernetes/relay.yaml"
	systemdPath    = "systemd/relay.service"
)

type k8sMeta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sHead struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
}

type k8sConfigMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   k8sMeta           `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

type k8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	EnvFrom []struct {
		SecretRef struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
		SubPath   string `yaml:"subPath"`
	} `yaml:"volumeMounts"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop struct {
			Sleep struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type k8sDeployment struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
	Spec       struct {
		Replicas int         `yaml:"replicas"`
		Selector k8sSelector `yaml:"selector"`
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable int `yaml:"maxUnavailable"`
				MaxSurge       int `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot   bool `yaml:"runAsNonRoot"`
					SeccompProfile struct {
						Type string `yaml:"type"`
					} `yaml:"seccompProfile"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sService struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
	Spec       struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
			Protocol   string `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sPDB struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
	Spec       struct {
		MinAvailable int         `yaml:"minAvailable"`
		Selector     k8sSelector `yaml:"selector"`
	} `yaml:"spec"`
}

// manifest is the parsed Kubernetes manifest.
type manifest struct {
	configMap  k8sConfigMap
	deployment k8sDeployment
	service    k8sService
	pdb        k8sPDB
}

func readManifest(t *testing.T) manifest {
	t.Helper()
	b, err := os.ReadFile(kubernetesPath)
	if err != nil {
		t.Fatal(err)
	}
	// First the kinds, then each document strictly into its type, so that
	// errors carry the file's own line numbers.
	var heads []k8sHead
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var h k8sHead
		err := dec.Decode(&h)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", kubernetesPath, len(heads), err)
		}
		heads = append(heads, h)
	}
	var m manifest
	kinds := map[string]int{}
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	for i, h := range heads {
		kinds[h.APIVersion+" "+h.Kind]++
		var target any
		switch h.APIVersion + " " + h.Kind {
		case "v1 ConfigMap":
			target = &m.configMap
		case "apps/v1 Deployment":
			target = &m.deployment
		case "v1 Service":
			target = &m.service
		case "policy/v1 PodDisruptionBudget":
			target = &m.pdb
		default:
			t.Fatalf("%s: document %d: unexpected %s %s", kubernetesPath, i, h.APIVersion, h.Kind)
		}
		if err := strict.Decode(target); err != nil {
			t.Fatalf("%s: %s: %v", kubernetesPath, h.Kind, err)
		}
	}
	for k, n := range kinds {
		if n != 1 {
			t.Errorf("%s has %d of %s", kubernetesPath, n, k)
		}
	}
	if len(kinds) != 4 {
		t.Fatalf("%s has %v, want a ConfigMap, a Deployment, a Service and a PodDisruptionBudget", kubernetesPath, kinds)
	}
	return m
}

// carriedConfig is what the manifest's checks need of the relay
// configuration in its ConfigMap (cmd/relay's tests load it whole).
type carriedConfig struct {
	Server struct {
		Port            int    `yaml:"port"`
		ShutdownTimeout string `yaml:"shutdown_timeout"`
		WatchInterval   string `yaml:"watch_interval"`
	} `yaml:"server"`
	Observability struct {
		Prometheus struct {
			Enabled bool   `yaml:"enabled"`
			Path    string `yaml:"path"`
			Addr    string `yaml:"addr"`
		} `yaml:"prometheus"`
	} `yaml:"observability"`
}

// TestKubernetesManifest: probes on /readyz and /healthz, a grace period
// that covers preStop and the relay's shutdown_timeout, Prometheus
// annotations that match what the relay serves, and parts that refer to
// each other correctly.
func TestKubernetesManifest(t *testing.T) {
	m := readManifest(t)
	d := m.deployment
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The configuration the pod mounts.
	if len(pod.Volumes) != 1 || pod.Volumes[0].ConfigMap.Name != m.configMap.Metadata.Name {
		t.Fatalf("volumes %+v do not mount ConfigMap %s", pod.Volumes, m.configMap.Metadata.Name)
	}
	var mount string
	for _, vm := range c.VolumeMounts {
		if vm.Name == pod.Volumes[0].Name {
			mount = vm.MountPath
			if vm.SubPath != "" {
				t.Error("the ConfigMap is mounted with subPath, which never updates: the reload on change would never see a change")
			}
		}
	}
	i := slices.Index(c.Args, "-config")
	if i < 0 || i+1 >= len(c.Args) || filepath.Dir(c.Args[i+1]) != mount {
		t.Fatalf("args %q do not read the configuration from the mount %s", c.Args, mount)
	}
	src, ok := m.configMap.Data[filepath.Base(c.Args[i+1])]
	if !ok {
		t.Fatalf("ConfigMap has no key %s", filepath.Base(c.Args[i+1]))
	}
	var cfg carriedConfig
	if err := yaml.Unmarshal([]byte(src), &cfg); err != nil {
		t.Fatal(err)
	}
	shutdown, err := time.ParseDuration(cfg.Server.ShutdownTimeout)
	if err != nil {
		t.Fatalf("server.shutdown_timeout: %v", err)
	}
	if _, err := time.ParseDuration(cfg.Server.WatchInterval); err != nil || cfg.Server.WatchInterval == "0s" {
		t.Errorf("server.watch_interval %q: a ConfigMap edit should be reloaded", cfg.Server.WatchInterval)
	}

	// Ports, probes and scrape annotations agree with the relay.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != cfg.Server.Port {
		t.Errorf("container port http = %d, the relay listens on %d", ports["http"], cfg.Server.Port)
	}
	for name, p := range map[string]*k8sProbe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if p == nil || p.HTTPGet.Path != name || ports[p.HTTPGet.Port] != cfg.Server.Port {
			t.Errorf("probe for %s = %+v", name, p)
		}
	}
	ann := d.Spec.Template.Metadata.Annotations
	metricsPort := cfg.Server.Port
	if a := cfg.Observability.Prometheus.Addr; a != "" {
		_, p, _ := strings.Cut(a, ":")
		metricsPort, _ = strconv.Atoi(p)
	}
	if !cfg.Observability.Prometheus.Enabled || ann["prometheus.io/scrape"] != "true" ||
		ann["prometheus.io/port"] != strconv.Itoa(metricsPort) || ann["prometheus.io/path"] != cfg.Observability.Prometheus.Path {
		t.Errorf("scrape annotations %v, metrics on port %d at %s", ann, metricsPort, cfg.Observability.Prometheus.Path)
	}

	// Shutdown: the grace period covers preStop, the drain and the rest.
	pre := c.Lifecycle.PreStop.Sleep.Seconds
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	if pre < 1 {
		t.Errorf("preStop sleeps %ds; endpoints need a moment to drop the pod", pre)
	}
	if want := time.Duration(pre)*time.Second + shutdown + 10*time.Second; grace < want {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %ds + shutdown_timeout %v + 10s", grace, pre, shutdown)
	}
	if grace > time.Duration(pre)*time.Second+shutdown+30*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v is far beyond what the relay needs (%ds + %v + 10s)", grace, pre, shutdown)
	}

	// Selectors, the Service and the budget.
	labels := d.Spec.Template.Metadata.Labels
	for name, sel := range map[string]map[string]string{"deployment": d.Spec.Selector.MatchLabels,
		"service": m.service.Spec.Selector, "pdb": m.pdb.Spec.Selector.MatchLabels} {
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("the %s selects %s=%s, which the pods do not carry", name, k, v)
			}
		}
		if len(sel) == 0 {
			t.Errorf("the %s selects nothing", name)
		}
	}
	if sp := m.service.Spec.Ports; len(sp) != 1 || ports[sp[0].TargetPort] == 0 {
		t.Errorf("service ports %+v do not target a named container port", sp)
	}
	if d.Spec.Strategy.RollingUpdate.MaxUnavailable != 0 || m.pdb.Spec.MinAvailable < 1 || d.Spec.Replicas <= m.pdb.Spec.MinAvailable {
		t.Errorf("rollouts or disruptions may leave no pod serving: %+v, pdb %d of %d", d.Spec.Strategy, m.pdb.Spec.MinAvailable, d.Spec.Replicas)
	}
	sc := c.SecurityContext
	if !pod.SecurityContext.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		!sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("security context %+v / %+v", pod.SecurityContext, sc)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef.Name == "" {
		t.Errorf("credentials should come from a Secret: %+v", c.EnvFrom)
	}
}

// unitFile is a systemd unit: section → key → values (keys may repeat).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %s", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unitFile) one(section, key string) string {
	if v := u[section][key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// TestSystemdUnit: the unit starts the relay on a configuration file,
// reloads with SIGHUP after validating the file, stops with SIGTERM and
// gives the drain its time, runs without privileges; systemd-analyze
// verifies it.
func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, systemdPath)
	start := strings.Fields(u.one("Service", "ExecStart"))
	if len(start) != 3 || start[1] != "-config" || !filepath.IsAbs(start[0]) || !filepath.IsAbs(start[2]) {
		t.Fatalf("ExecStart %q: want /path/to/relay -config /path/to/config.yaml", start)
	}
	reload := u["Service"]["ExecReload"]
	if len(reload) != 2 || reload[0] != start[0]+" -check -config "+start[2] || reload[1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload %q: want relay -check on the same file, then kill -HUP $MAINPID", reload)
	}
	if u.one("Service", "KillSignal") != "SIGTERM" {
		t.Errorf("KillSignal %q, want SIGTERM (the relay drains on it)", u.one("Service", "KillSignal"))
	}
	stop, err := strconv.Atoi(u.one("Service", "TimeoutStopSec"))
	if err != nil || time.Duration(stop)*time.Second < 30*time.Second+15*time.Second {
		t.Errorf("TimeoutStopSec %q: want at least the default shutdown_timeout (30s) + 15s", u.one("Service", "TimeoutStopSec"))
	}
	for key, want := range map[string]string{"Type": "exec", "DynamicUser": "yes", "NoNewPrivileges": "yes",
		"ProtectSystem": "strict", "CapabilityBoundingSet": "", "Restart": "on-failure"} {
		if got, ok := u["Service"][key]; !ok || got[len(got)-1] != want {
			t.Errorf("[Service] %s = %q, want %q", key, got, want)
		}
	}
	if u.one("Install", "WantedBy") != "multi-user.target" || u.one("Unit", "After") != "network-online.target" {
		t.Errorf("[Unit]/[Install]: %v %v", u["Unit"], u["Install"])
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testkit.Missing(t, "systemd-analyze is not installed (Debian's systemd package)")
	}
	// systemd-analyze wants the binary to exist: point the copy at one.
	dir := t.TempDir()
	bin := filepath.Join(dir, "relay")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(systemdPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "relay.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte(start[0]), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
