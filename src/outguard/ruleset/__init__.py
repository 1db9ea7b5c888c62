"""The meaning of a policy: its IR (`ir`), how a policy becomes one (`lower`), what it decides
for a flow (`decide`) and for a DNS name (`names`), and the integer range math they share."""
