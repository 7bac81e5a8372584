"""Operations: metrics at scrape time, health and readiness probes, the access log, process supervision."""
