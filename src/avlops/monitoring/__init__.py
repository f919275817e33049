"""Monitoring: a local Prometheus and Pushgateway started by the project, a query client, reports and probes."""
