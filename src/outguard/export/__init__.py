"""Exporters: the same IR, rendered for firewalls other than nftables (see `fidelity`)."""
