"""From learned flows to a policy, and back: `suggest` writes a reviewable policy from what
`outguard learn` recorded, `simulate` replays the recorded flows through a policy.

Place in the data flow: pure functions over `events.LearnedFlow` (from the store, or a `--flows`
file) and a lowered `ruleset.Ruleset`, above `policy` and `ruleset`, below `cli`, which reads
the store and the files. Nothing here touches the kernel: simulate asks the same `decide()` the
kernel tests hold nftables to.
"""
