"""The metrics dashboard's picture (``make dashboard-shot``): docs/grafana-dashboard.json's own queries,
run by a real Prometheus against a real gateway under traffic, drawn without Grafana."""
