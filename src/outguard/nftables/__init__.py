"""nftables package."""
