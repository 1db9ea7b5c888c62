"""kernel.fqdnsets: a resolver's answers become one batch per set, each entry's timeout reset."""

from __future__ import annotations

from outguard.kernel.fqdnsets import commands


def test_each_address_is_added_with_a_fresh_timeout() -> None:
    cmds = commands([("f_0123456789ab_4", "203.0.113.7", 30), ("f_0123456789ab_4", "192.0.2.1", 0)])
    base = {"family": "inet", "table": "outguard", "name": "f_0123456789ab_4"}
    plain = ["203.0.113.7", "192.0.2.1"]
    assert cmds == [
        {"add": {"element": {**base, "elem": plain}}},
        {"delete": {"element": {**base, "elem": plain}}},
        {"add": {"element": {**base, "elem": [{"elem": {"val": "203.0.113.7", "timeout": 30}},
                                              {"elem": {"val": "192.0.2.1", "timeout": 1}}]}}}]
