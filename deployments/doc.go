// Package deployments holds the tests of the monitoring assets beside it:
// the Prometheus configuration and alert rules, the Grafana dashboard and
// provisioning, the docker-compose setup and the PromQL cheat sheet. It has
// no code of its own; see assets_test.go and expressions_test.go for the
// static checks, and live_test.go for the test against a real Prometheus
// scraping a running relay.
package deployments
