"""The monitor: NFLOG packets → events → attribution → classification → incidents → store/alerts."""
