"""outguard: default-deny egress filtering for Linux servers, enforced by nftables."""

__version__ = "0.1.0"
