"""``permitchain bench``: latency, throughput and footprint of the chain, end to end."""
