"""What every outbound HTTP call shares: pooled sessions, typed errors, safe media fetching."""
