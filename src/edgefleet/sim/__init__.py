"""The fleet simulator: virtual devices running the real agent core against the real
server, with measured model behaviour and simulated networks."""
