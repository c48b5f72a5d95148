"""Analytics: counters maintained as events arrive, time series, per-link stats."""
