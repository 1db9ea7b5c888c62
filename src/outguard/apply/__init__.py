"""Applying a policy to the kernel, and every way back.

`applyplan` computes what an apply will do (pure: a plan), `executor` runs a plan and is the
only place that catches the kernel's refusals, `transact` holds the transaction helpers they
share, `recovery` rolls back, confirms, restores and falls back (`failclosed`), `status` tells
what is applied and what drifted, `planview` prints a plan; `run` is the entry point of
`outguard apply` and of a re-apply.
"""
